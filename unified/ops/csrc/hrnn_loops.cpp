// The two per-step loops of `unified.ops.hrnn_scan` (the forward recurrence and the reverse loop
// of its backward through time), written with the same ATen calls in the same order as the
// Python loops there, so both give the same values. Compiled once per machine by
// `unified.ops.compiled` and registered as torch.ops.unified_hrnn.{forward_loop,backward_loop}.
// What moves here is only the per-step interpretation: at micro scale a training step made
// ~10 Python-level calls per cell step, each a few microseconds, about as long as the kernels.
// Buffers are allocated, and everything batched over all steps is computed, by the Python side.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

using at::Tensor;

namespace {

// oneDNN's product with a weight packed once (PackedWeight in packed_matmul.py); looked up once.
const auto& linear_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                                     c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
  return op;
}

const auto& linear_add_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "binary")
                       .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
                                     c10::string_view)>();
  return op;
}

// A weight as PackedWeight holds it: wt = w.T for torch.mm, packed = oneDNN's layout, undefined
// where PackedWeight.uses_packed says torch.mm (the Python side decides, once per scan).
struct Weight {
  Tensor wt, packed;
  // PackedWeight.mm: x @ w.T, into `out` when it is defined.
  Tensor mm(const Tensor& x, Tensor out = Tensor()) const {
    if (!packed.defined()) return out.defined() ? at::mm_out(out, x, wt) : at::mm(x, wt);
    Tensor y = linear_op().call(x, packed, std::nullopt, "none", c10::List<std::optional<at::Scalar>>(), "");
    return out.defined() ? out.copy_(y) : y;
  }
  // PackedWeight.addmm: base + x @ w.T, into `out` when it is defined (`out` may be `base`).
  Tensor addmm(const Tensor& base, const Tensor& x, Tensor out = Tensor()) const {
    if (!packed.defined()) return out.defined() ? at::addmm_out(out, base, x, wt) : at::addmm(base, x, wt);
    Tensor y = linear_add_op().call(x, base, packed, std::nullopt, "add");
    return out.defined() ? out.copy_(y) : y;
  }
};

Weight weight(const Tensor& wt, const std::optional<Tensor>& packed) {
  return Weight{wt, packed.has_value() ? *packed : Tensor()};
}

// _ln: per-gate layer norm without gain of x (B, G H): (x_hat (B, G H), mean, rstd (B, G, 1)).
std::tuple<Tensor, Tensor, Tensor> ln(const Tensor& x, int64_t H, double eps) {
  const int64_t B = x.size(0);
  auto [y, m, r] = at::native_layer_norm(x.view({B, -1, H}), {H}, std::nullopt, std::nullopt, eps);
  return {y.view({B, -1}), m, r};
}

// _ln_dx: input gradient of `ln` from the gradient dy of x_hat.
Tensor ln_dx(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd, int64_t H) {
  const int64_t B = x.size(0);
  auto grads = at::native_layer_norm_backward(dy.view({B, -1, H}), x.view({B, -1, H}), {H}, mean, rstd,
                                              std::nullopt, std::nullopt, {true, false, false});
  return std::get<0>(grads).view({B, -1});
}

// _HighNorm: the per-gate norms of the fused high projection hp (B, 3Hl + 3Hh).
struct HighNorm {
  int64_t n_low, Hl, Hh;
  double eps;
  std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& hp) const {
    if (Hl == Hh) return ln(hp, Hl, eps);
    auto [yl, ml, rl] = ln(hp.slice(1, 0, n_low).contiguous(), Hl, eps);
    auto [yh, mh, rh] = ln(hp.slice(1, n_low).contiguous(), Hh, eps);
    return {at::cat({yl, yh}, 1), at::cat({ml, mh}, 1), at::cat({rl, rh}, 1)};
  }
  Tensor dx(const Tensor& dy, const Tensor& hp, const Tensor& m, const Tensor& r) const {
    if (Hl == Hh) return ln_dx(dy, hp, m, r, Hl);
    Tensor lo = ln_dx(dy.slice(1, 0, n_low).contiguous(), hp.slice(1, 0, n_low).contiguous(),
                      m.slice(1, 0, 3).contiguous(), r.slice(1, 0, 3).contiguous(), Hl);
    Tensor hi = ln_dx(dy.slice(1, n_low).contiguous(), hp.slice(1, n_low).contiguous(),
                      m.slice(1, 3).contiguous(), r.slice(1, 3).contiguous(), Hh);
    return at::cat({lo, hi}, 1);
  }
};

// _gru_step: rz = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r gh_n), h' = lerp(n, h, z), into the
// preallocated outputs (h_out may be h itself).
void gru_step(const Tensor& gi, const Tensor& gh, const Tensor& h, Tensor rz_out, Tensor n_out, Tensor h_out) {
  const int64_t H = h.size(1);
  at::add_out(rz_out, gi.slice(1, 0, 2 * H), gh.slice(1, 0, 2 * H)).sigmoid_();
  at::addcmul_out(n_out, gi.slice(1, 2 * H), rz_out.slice(1, 0, H), gh.slice(1, 2 * H)).tanh_();
  at::lerp_out(h_out, n_out, h, rz_out.slice(1, H));
}

// The forward recurrence of hrnn_scan._forward: fills the buffers; with `save`, returns the
// per-step q, lm, lr (low) and hm, hr, pm, pr (per cycle) stacked, else an empty list (buffers
// then hold one step and hs gets the high state after each token).
std::vector<Tensor> forward_loop(const Tensor& xn, const Tensor& lows, const Tensor& highs, const Tensor& gh,
                                 const Tensor& rz, const Tensor& nb, const Tensor& hp, const Tensor& hpn,
                                 const Tensor& p, const Tensor& gih, const Tensor& rzh, const Tensor& nh,
                                 const Tensor& hs, const Tensor& g_hp, const Tensor& g_lrec, const Tensor& g_hin,
                                 const Tensor& b_hin, const Tensor& high_wt, const std::optional<Tensor>& high_pk,
                                 const Tensor& low_wt, const std::optional<Tensor>& low_pk, const Tensor& up_wt,
                                 const std::optional<Tensor>& up_pk, int64_t T, int64_t N, double eps, bool save) {
  const int64_t L = xn.size(1), Hl = lows.size(2), Hh = highs.size(2);
  const HighNorm norm{3 * Hl, Hl, Hh, eps};
  const Weight w_high = weight(high_wt, high_pk), w_low = weight(low_wt, low_pk), w_up = weight(up_wt, up_pk);
  auto lows_s = lows.unbind(0), highs_s = highs.unbind(0), gh_s = gh.unbind(0), rz_s = rz.unbind(0),
             nb_s = nb.unbind(0), hp_s = hp.unbind(0), hpn_s = hpn.unbind(0), p_s = p.unbind(0),
             gih_s = gih.unbind(0), rzh_s = rzh.unbind(0), nh_s = nh.unbind(0);
  std::vector<Tensor> q, lm, lr, hm, hr, pm, pr;
  const int64_t one = save ? 1 : 0;
  int64_t k = 0, c = 0;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor x_t = xn.select(1, t);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t ci = save ? c : 0;
      Tensor hp_c = w_high.mm(highs_s[ci], hp_s[ci]);
      auto [xh, hm_c, hr_c] = norm.forward(hp_c);
      Tensor hpn_c = at::mul_out(hpn_s[ci], xh, g_hp);
      Tensor gi_low = x_t + hpn_c.slice(1, 0, 3 * Hl);
      for (int64_t s = 0; s < T; ++s) {
        const int64_t ki = k * one;
        Tensor q_k = w_low.mm(lows_s[ki]);
        auto [xq, lm_k, lr_k] = ln(q_k, Hl, eps);
        Tensor gh_k = at::mul_out(gh_s[ki], xq, g_lrec);
        gru_step(gi_low, gh_k, lows_s[ki], rz_s[ki], nb_s[ki], lows_s[ki + one]);
        if (save) {
          q.push_back(q_k);
          lm.push_back(lm_k);
          lr.push_back(lr_k);
        }
        ++k;
      }
      Tensor p_c = w_up.mm(lows_s[k * one], p_s[ci]);
      auto [xp, pm_c, pr_c] = ln(p_c, Hh, eps);
      Tensor gih_c = at::addcmul_out(gih_s[ci], b_hin, xp, g_hin);
      gru_step(gih_c, hpn_c.slice(1, 3 * Hl), highs_s[ci], rzh_s[ci], nh_s[ci], highs_s[ci + one]);
      if (save) {
        hm.push_back(hm_c);
        hr.push_back(hr_c);
        pm.push_back(pm_c);
        pr.push_back(pr_c);
      }
      ++c;
    }
    if (!save) hs.select(1, t).copy_(highs_s[0]);
  }
  if (!save) return {};
  return {at::stack(q), at::stack(lm), at::stack(lr), at::stack(hm), at::stack(hr), at::stack(pm), at::stack(pr)};
}

// The reverse loop of hrnn_scan._backward: fills dlows (S + 1, B, Hl; dlows[S] set by the caller),
// dhighs, dhpn, dxn (zeros on entry); returns [dq, dp, dhp] stacked over steps and the state
// gradient dhigh reaching the initial high state.
std::vector<Tensor> backward_loop(const std::optional<Tensor>& d_hs, const Tensor& dlows, const Tensor& dhighs,
                                  const Tensor& dhpn, const Tensor& dxh, const Tensor& dxn, const Tensor& dhigh0,
                                  const Tensor& k_gi, const Tensor& k_q, const Tensor& k_p, const Tensor& kh_q,
                                  const Tensor& zl, const Tensor& zh, const Tensor& q, const Tensor& lm,
                                  const Tensor& lr, const Tensor& p, const Tensor& pm, const Tensor& pr,
                                  const Tensor& hp, const Tensor& hm, const Tensor& hr, const Tensor& g_hl,
                                  const Tensor& high_wt, const std::optional<Tensor>& high_pk, const Tensor& low_wt,
                                  const std::optional<Tensor>& low_pk, const Tensor& up_wt,
                                  const std::optional<Tensor>& up_pk, int64_t T, int64_t N, int64_t tbptt,
                                  int64_t pos, double eps) {
  const int64_t S = dlows.size(0) - 1, B = dlows.size(1), Hl = dlows.size(2);
  const int64_t C = dhighs.size(0), Hh = dhighs.size(2), L = C / N;
  const HighNorm norm{3 * Hl, Hl, Hh, eps};
  const Weight w_high = weight(high_wt, high_pk), w_low = weight(low_wt, low_pk), w_up = weight(up_wt, up_pk);
  const auto dl_s = dlows.unbind(0), k_q_s = k_q.unbind(0), k_p_c = k_p.unbind(0), kh_q_c = kh_q.unbind(0),
             zl_s = zl.unbind(0), zh_s = zh.unbind(0), q_s = q.unbind(0), lm_s = lm.unbind(0), lr_s = lr.unbind(0);
  std::vector<Tensor> dq(S), dp(C), dhp(C);
  Tensor dxh_low = dxh.slice(1, 0, 3 * Hl), dxh_high = dxh.slice(1, 3 * Hl).view({B, 3, Hh});
  Tensor dhigh = dhigh0;
  const int64_t dim0[] = {0};
  for (int64_t t = L - 1; t >= 0; --t) {
    if (d_hs.has_value()) dhigh = dhigh + d_hs->select(1, t);
    for (int64_t n = N - 1; n >= 0; --n) {
      const int64_t c = t * N + n, k0 = c * T, end = (c + 1) * T;
      dhighs.select(0, c).copy_(dhigh);
      dp[c] = ln_dx(at::mul(k_p_c[c], dhigh.unsqueeze(1)), p.select(0, c), pm.select(0, c), pr.select(0, c), Hh);
      w_up.addmm(dl_s[end], dp[c], dl_s[end]);
      for (int64_t k = end - 1; k >= k0; --k) {
        dq[k] = ln_dx(at::mul(k_q_s[k], dl_s[k + 1].unsqueeze(1)), q_s[k], lm_s[k], lr_s[k], Hl);
        w_low.addmm(at::mul(dl_s[k + 1], zl_s[k]), dq[k], dl_s[k]);
      }
      Tensor dgi3 = dhpn.select(0, c).view({B, 3, Hl});
      at::sum_out(dgi3, k_gi.slice(0, k0, end) * dlows.slice(0, k0 + 1, end + 1).unsqueeze(2), at::IntArrayRef(dim0));
      Tensor dgi_low = dgi3.view({B, 3 * Hl});
      dxn.select(1, t).add_(dgi_low);
      at::mul_out(dxh_low, dgi_low, g_hl);
      at::mul_out(dxh_high, kh_q_c[c], dhigh.unsqueeze(1));
      dhp[c] = norm.dx(dxh, hp.select(0, c), hm.select(0, c), hr.select(0, c));
      dhigh = w_high.addmm(dhigh * zh_s[c], dhp[c]);
    }
    if (tbptt > 0 && (pos + t) % tbptt == 0 && pos + t > 0) {
      dl_s[t * N * T].zero_();
      dhigh = at::zeros_like(dhigh);
    }
  }
  return {at::stack(dq), at::stack(dp), at::stack(dhp), dhigh};
}

}  // namespace

TORCH_LIBRARY(unified_hrnn, m) {
  m.def("forward_loop(Tensor xn, Tensor lows, Tensor highs, Tensor gh, Tensor rz, Tensor nb, Tensor hp, "
        "Tensor hpn, Tensor p, Tensor gih, Tensor rzh, Tensor nh, Tensor hs, Tensor g_hp, Tensor g_lrec, "
        "Tensor g_hin, Tensor b_hin, Tensor high_wt, Tensor? high_pk, Tensor low_wt, Tensor? low_pk, "
        "Tensor up_wt, Tensor? up_pk, int T, int N, float eps, bool save) -> Tensor[]",
        &forward_loop);
  m.def("backward_loop(Tensor? d_hs, Tensor dlows, Tensor dhighs, Tensor dhpn, Tensor dxh, Tensor dxn, "
        "Tensor dhigh0, Tensor k_gi, Tensor k_q, Tensor k_p, Tensor kh_q, Tensor zl, Tensor zh, Tensor q, "
        "Tensor lm, Tensor lr, Tensor p, Tensor pm, Tensor pr, Tensor hp, Tensor hm, Tensor hr, Tensor g_hl, "
        "Tensor high_wt, Tensor? high_pk, Tensor low_wt, Tensor? low_pk, Tensor up_wt, Tensor? up_pk, "
        "int T, int N, int tbptt, int pos, float eps) -> Tensor[]",
        &backward_loop);
}
