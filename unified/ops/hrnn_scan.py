"""The two-level LayerNorm-GRU recurrence of `hrnn` with a hand-written backward through time.

The recurrence (see `unified.models.hrnn`; reference loop: `hrnn_scan_naive.py`): per token t,
N cycles of [T low GRU steps driven by (x_t, high), then one high GRU step driven by low]. Run
as a loop of differentiable ops, autograd records ~10 nodes per cell application and replays
them one by one in backward, each weight gradient a K = batch matmul per step; on CPU that
bookkeeping, not the arithmetic, was ~97% of a training step. Here one `autograd.Function`
covers the whole sequence:

- forward runs the same recurrence outside autograd, each per-gate layer norm as one
  `native_layer_norm` over (B, 3, H) (which also returns the means / inverse std backward needs;
  the gains are applied outside it, and are not a layer-norm weight), and writes every state and
  gate activation into preallocated (steps, B, .) buffers (in-place sigmoid / tanh, `out=`);
- backward first turns the saved activations into per-step gate coefficients, all steps in one
  batched op each (for h' = n + z (h - n) with n = tanh(gi_n + r gh_n), r, z = sigmoid(.)):
      c_n = (1 - z)(1 - n^2),  c_z = (h - n) z (1 - z),  c_r = c_n gh_n r (1 - r)
      d gi = dh' [c_r, c_z, c_n],   d gh = dh' [c_r, c_z, c_n r],   dh += dh' z
  so the reverse loop per low step is: one broadcast multiply (by the coefficients times the
  gains), the fused layer-norm backward kernel, and one addmm (dh_prev = dh z + d q U); the
  input-side gradient of a cycle is one reduction over its T steps;
- weight and gain gradients are summed over all steps at the end: one (3H, steps * B) @
  (steps * B, H) product per weight, one batched reduction per gain;
- every per-step product, forward and backward, multiplies a weight packed once per call
  (`unified.ops.packed_matmul`: torch.mm would re-pack it at each of the thousands of steps);
- the two loops over steps (`_forward_loop`, `_backward_loop`) run compiled on CPU
  (csrc/hrnn_loops.cpp through `unified.ops.compiled`: the same ATen calls in the same order,
  so the same values bit for bit, without the interpreter between the ~10 calls of a cell step);
  the Python loops here run where the extension does not build, and on other devices.
(`group_norm` with 3 groups computes the same norms, but its CPU kernels for (B, 3H) inputs took
2-5x longer than `native_layer_norm` and its backward.) Values equal the reference loop's to
rounding, and so do the gradients (float64 gradcheck in tests/test_hrnn_scan.py). Without
gradients the same forward runs with one-step buffers. tbptt zeroes the carried state gradients at the truncation
boundaries, as detaching the states does. The Function is once-differentiable.
"""
from __future__ import annotations

from typing import Any

import torch

from unified.ops.compiled import compiled_ops
from unified.ops.packed_matmul import PackedWeight
from unified.ops.precision import float32_scan

_LN_BACKWARD = torch.ops.aten.native_layer_norm_backward


def _ln(x: torch.Tensor, H: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-gate layer norm without gain of x (B, G H), each run of H channels on its own:
    (x_hat (B, G H), mean (B, G, 1), rstd (B, G, 1)). One `native_layer_norm` call; the gains
    are applied by the callers (per-gate gains are not a layer-norm weight)."""
    B = x.shape[0]
    y, m, r = torch.native_layer_norm(x.view(B, -1, H), [H], None, None, eps)
    return y.view(B, -1), m, r


def _ln_dx(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, H: int) -> torch.Tensor:
    """Input gradient of `_ln` from the gradient dy (B, G H) of x_hat (one fused kernel)."""
    B = x.shape[0]
    return _LN_BACKWARD(dy.view(B, -1, H), x.view(B, -1, H), [H], mean, rstd, None, None,
                        [True, False, False])[0].view(B, -1)


def _x_hat(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, H: int) -> torch.Tensor:
    """`_ln`'s x_hat recomputed for all steps at once: x (steps, B, G H), mean / rstd (steps, B, G, 1)."""
    shape = x.shape
    return ((x.view(*shape[:-1], -1, H) - mean) * rstd).view(shape)


class _HighNorm:
    """Per-gate layer norms (no gain) of the fused high projection hp = high @ [W_h; U_h]^T
    (B, 3Hl + 3Hh): one call over 6 gates when Hl == Hh, else one per part."""

    def __init__(self, n_low: int, Hl: int, Hh: int, eps: float):
        self.n_low, self.Hl, self.Hh, self.eps = n_low, Hl, Hh, eps
        self.shared = Hl == Hh

    def forward(self, hp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.shared:
            return _ln(hp, self.Hl, self.eps)
        n = self.n_low
        (yl, ml, rl), (yh, mh, rh) = (_ln(hp[:, sl].contiguous(), H, self.eps)
                                      for sl, H in ((slice(None, n), self.Hl), (slice(n, None), self.Hh)))
        return torch.cat([yl, yh], dim=1), torch.cat([ml, mh], dim=1), torch.cat([rl, rh], dim=1)

    def dx(self, dy: torch.Tensor, hp: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return _ln_dx(dy, hp, m, r, self.Hl)
        parts = ((slice(None, self.n_low), slice(None, 3), self.Hl), (slice(self.n_low, None), slice(3, None), self.Hh))
        return torch.cat([_ln_dx(*(v[:, sl].contiguous() for v in (dy, hp)), *(v[:, g].contiguous() for v in (m, r)), H)
                          for sl, g, H in parts], dim=1)  # the kernel reads contiguous rows

    def x_hat(self, hp: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return _x_hat(hp, m, r, self.Hl)
        n = self.n_low
        return torch.cat([_x_hat(hp[..., :n], m[..., :3, :], r[..., :3, :], self.Hl),
                          _x_hat(hp[..., n:], m[..., 3:, :], r[..., 3:, :], self.Hh)], dim=-1)


def _gru_step(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, rz_out: torch.Tensor, n_out: torch.Tensor,
              h_out: torch.Tensor) -> None:
    """GRU update into preallocated outputs: rz = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r gh_n),
    h' = lerp(n, h, z) (h_out may be h itself)."""
    H = h.shape[1]
    torch.add(gi[:, :2 * H], gh[:, :2 * H], out=rz_out).sigmoid_()
    torch.addcmul(gi[:, 2 * H:], rz_out[:, :H], gh[:, 2 * H:], out=n_out).tanh_()
    torch.lerp(n_out, h, rz_out[:, H:], out=h_out)


def _gru_coefficients(rz: torch.Tensor, n: torch.Tensor, h_prev: torch.Tensor, gh_n: torch.Tensor,
                      gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step gate coefficients (steps, B, 3, H) of the input-side pre-activation gradient
    [c_r, c_z, c_n] (module docstring), and of the recurrent-side one times the recurrent layer
    norm's gain, [c_r, c_z, c_n r] g (the gradient of that norm's x_hat), for all steps at once."""
    H = n.shape[-1]
    r, z = rz[..., :H], rz[..., H:]
    k_gi = n.new_empty(*n.shape[:-1], 3, H)
    cr, cz, cn = k_gi.unbind(-2)
    omz = 1.0 - z
    torch.mul(torch.addcmul(omz, omz, n * n, value=-1.0), 1.0, out=cn)  # (1 - z)(1 - n^2)
    torch.mul(torch.sub(h_prev, n).mul_(z), omz, out=cz)  # (h - n) z (1 - z)
    torch.mul(torch.addcmul(r, r, r, value=-1.0).mul_(gh_n), cn, out=cr)  # c_n gh_n r (1 - r)
    k_q = k_gi * gain.view(3, H)
    k_q[..., 2, :].mul_(r)
    return k_gi, k_q


# What the forward loop keeps per low step (q, lm, lr) and per cycle (hm, hr, pm, pr), in its order.
_KEPT = ("q", "lm", "lr", "hm", "hr", "pm", "pr")


def _forward(xn, low0, high0, w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec, T: int, N: int,
             eps: float, save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The recurrence without autograd; with `save`, every step's activations are kept (returned
    in the dict) for `_backward`, else buffers hold one step."""
    B, L, _ = xn.shape
    Hl, Hh = low0.shape[1], high0.shape[1]
    C, S = (L * N, L * N * T) if save else (1, 1)
    new = xn.new_empty
    lows, highs = new(S + 1 if save else 1, B, Hl), new(C + 1 if save else 1, B, Hh)
    lows[0], highs[0] = low0, high0
    gh, rz, nb = new(S, B, 3 * Hl), new(S, B, 2 * Hl), new(S, B, Hl)
    hp, hpn, p, gih = new(C, B, 3 * Hl + 3 * Hh), new(C, B, 3 * Hl + 3 * Hh), new(C, B, 3 * Hh), new(C, B, 3 * Hh)
    rzh, nh, hs = new(C, B, 2 * Hh), new(C, B, Hh), new(B, L, Hh)
    bufs = (lows, highs, gh, rz, nb, hp, hpn, p, gih, rzh, nh, hs)
    gains = (torch.cat([g_hl, g_hrec]), g_lrec, g_hin, b_hin)
    packed = tuple(PackedWeight(w) for w in (w_high, u_low, w_up))
    ops = _compiled(xn)
    if ops is not None:
        kept = ops.forward_loop(xn, *bufs, *gains, *_weight_args(packed, xn), T, N, eps, save)
    else:
        kept = _forward_loop(xn, *bufs, *gains, *packed, T, N, eps, save)
    low_last, high_last = lows[-1].clone(), highs[-1].clone()
    if not save:
        return hs, low_last, high_last, {}
    hs.copy_(highs[N::N].transpose(0, 1))  # the high state after each token's last cycle
    saved = dict(lows=lows, highs=highs, gh=gh, rz=rz, nb=nb, hp=hp, hpn=hpn, p=p, rzh=rzh, nh=nh,
                 **dict(zip(_KEPT, kept)))
    return hs, low_last, high_last, saved


def _compiled(x: torch.Tensor) -> Any:
    """The compiled loops (`unified.ops.compiled`, csrc/hrnn_loops.cpp) for CPU tensors, else None."""
    return compiled_ops("unified_hrnn") if x.device.type == "cpu" else None


def _weight_args(packed: tuple[PackedWeight, ...], x: torch.Tensor) -> list:
    """The compiled loops' form of packed weights: (w.T, the packed weight or None) per weight,
    None where PackedWeight would use torch.mm for products with x's rows and dtype (every
    product of one scan has the batch's rows and the scan's dtype)."""
    return [v for pk in packed for v in (pk.wt, pk.packed if pk.uses_packed(x) else None)]


def _forward_loop(xn, lows, highs, gh, rz, nb, hp, hpn, p, gih, rzh, nh, hs, g_hp, g_lrec, g_hin, b_hin,
                  pk_high: PackedWeight, pk_low: PackedWeight, pk_up: PackedWeight, T: int, N: int, eps: float,
                  save: bool) -> list[torch.Tensor]:
    """`_forward`'s loop over steps, filling its buffers (csrc/hrnn_loops.cpp's forward_loop is
    the same loop, compiled). With `save`, returns the per-step q, lm, lr and per-cycle hm, hr,
    pm, pr stacked; else [] (buffers hold one step; hs gets each token's high state)."""
    L, Hl, Hh = xn.shape[1], lows.shape[2], highs.shape[2]
    norm = _HighNorm(3 * Hl, Hl, Hh, eps)
    keep: dict[str, list] = {name: [] for name in _KEPT}
    lows_s, highs_s, gh_s, rz_s, nb_s = (v.unbind(0) for v in (lows, highs, gh, rz, nb))
    hp_s, hpn_s, p_s, gih_s, rzh_s, nh_s = (v.unbind(0) for v in (hp, hpn, p, gih, rzh, nh))
    one = 1 if save else 0  # the step index advances only when every step is kept
    k = c = 0
    for t in range(L):
        x_t = xn[:, t]
        for _n in range(N):
            ci = c if save else 0
            hp_c = pk_high.mm(highs_s[ci], out=hp_s[ci])
            xh, hm, hr = norm.forward(hp_c)
            hpn_c = torch.mul(xh, g_hp, out=hpn_s[ci])  # [LN(W_h h_h) g_hl, LN(U_h h_h) g_hrec]
            gi_low = x_t + hpn_c[:, :3 * Hl]
            for _s in range(T):
                ki = k * one
                q_k = pk_low.mm(lows_s[ki])  # kept per step for backward (no copy into a buffer)
                xq, lm, lr = _ln(q_k, Hl, eps)
                gh_k = torch.mul(xq, g_lrec, out=gh_s[ki])
                _gru_step(gi_low, gh_k, lows_s[ki], rz_s[ki], nb_s[ki], lows_s[ki + one])
                if save:
                    for name, v in (("q", q_k), ("lm", lm), ("lr", lr)):
                        keep[name].append(v)
                k += 1
            p_c = pk_up.mm(lows_s[k * one], out=p_s[ci])
            xp, pm, pr = _ln(p_c, Hh, eps)
            gih_c = torch.addcmul(b_hin, xp, g_hin, out=gih_s[ci])
            _gru_step(gih_c, hpn_c[:, 3 * Hl:], highs_s[ci], rzh_s[ci], nh_s[ci], highs_s[ci + one])
            if save:
                for name, v in (("hm", hm), ("hr", hr), ("pm", pm), ("pr", pr)):
                    keep[name].append(v)
            c += 1
        if not save:
            hs[:, t] = highs_s[0]
    return [torch.stack(v) for v in keep.values()] if save else []


class _HierarchicalScan(torch.autograd.Function):
    """`hierarchical_scan` with the backward through time of the module docstring."""

    @staticmethod
    def forward(ctx, xn, low0, high0, w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec,
                T: int, N: int, tbptt: int, pos: int, eps: float):
        hs, low, high, saved = _forward(xn, low0, high0, w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec,
                                        T, N, eps, save=True)
        ctx.saved = saved
        ctx.params = (w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec)
        ctx.shape = (T, N, tbptt, pos, eps)
        return hs, low, high

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_hs, d_low, d_high):
        with float32_scan(ctx.saved["q"]):
            grads = _backward(ctx.saved, ctx.params, ctx.shape, d_hs, d_low, d_high, ctx.needs_input_grad)
        return (*grads, None, None, None, None, None)


def _backward(sv: dict[str, torch.Tensor], params, shape, d_hs, d_low, d_high, needs) -> tuple:
    """Gradients of `_HierarchicalScan` (module docstring); `needs` = ctx.needs_input_grad."""
    w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec = params
    T, N, tbptt, pos, eps = shape
    lows, highs = sv["lows"], sv["highs"]
    S, B, Hl = sv["nb"].shape
    C, _, Hh = sv["nh"].shape
    L = C // N
    norm = _HighNorm(3 * Hl, Hl, Hh, eps)
    # d x_hat(q) = dh' k_q, d x_hat(p) = dh_high kh_gi g_hin, d x_hat(U_h h) = dh_high kh_q
    k_gi, k_q = _gru_coefficients(sv["rz"], sv["nb"], lows[:-1], sv["gh"][..., 2 * Hl:], g_lrec)
    kh_gi, kh_q = _gru_coefficients(sv["rzh"], sv["nh"], highs[:-1], sv["hpn"][..., 3 * Hl + 2 * Hh:], g_hrec)
    k_p = kh_gi * g_hin.view(3, Hh)
    new = lows.new_empty
    dlows, dhighs = new(S + 1, B, Hl), new(C, B, Hh)
    dhpn, dxh = new(C, B, 3 * Hl), new(B, 3 * Hl + 3 * Hh)
    dxn = lows.new_zeros(B, L, 3 * Hl)
    dlows[S] = 0.0 if d_low is None else d_low
    dhigh = lows.new_zeros(B, Hh) if d_high is None else d_high
    # the transposed weights, packed once for the reverse loop's products d @ W
    packed = tuple(PackedWeight(w.t()) for w in (w_high, u_low, w_up))
    args = (d_hs, dlows, dhighs, dhpn, dxh, dxn, dhigh, k_gi, k_q, k_p, kh_q, sv["rz"][..., Hl:], sv["rzh"][..., Hh:],
            sv["q"], sv["lm"], sv["lr"], sv["p"], sv["pm"], sv["pr"], sv["hp"], sv["hm"], sv["hr"], g_hl)
    ops = _compiled(lows)
    if ops is not None:
        dq, dp, dhp, dhigh = ops.backward_loop(*args, *_weight_args(packed, lows[0]), T, N, tbptt, pos, eps)
    else:
        dq, dp, dhp, dhigh = _backward_loop(*args, *packed, T, N, tbptt, pos, eps)
    flat = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731
    d_w_high = flat(dhp).t() @ flat(highs[:-1]) if needs[3] else None
    d_u_low = flat(dq).t() @ flat(lows[:-1]) if needs[4] else None
    d_w_up = flat(dp).t() @ flat(lows[T::T]) if needs[5] else None
    d_g_hl = d_g_hrec = d_g_lrec = d_g_hin = d_b_hin = None
    # d gain = sum over steps of (d normalised output) x_hat; the recurrent side's output
    # gradient is dh' [c_r, c_z, c_n r]
    def d_rec_gain(k: torch.Tensor, dh: torch.Tensor, x_hat: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
        prod = k * dh[:, :, None] * x_hat.view(k.shape)
        prod[..., 2, :].mul_(rz[..., :k.shape[-1]])
        return prod.sum((0, 1)).flatten()

    if needs[6] or needs[10]:
        xh_hp = norm.x_hat(sv["hp"], sv["hm"], sv["hr"])
        d_g_hl = (dhpn * xh_hp[..., :3 * Hl]).sum((0, 1))
        d_g_hrec = d_rec_gain(kh_gi, dhighs, xh_hp[..., 3 * Hl:], sv["rzh"])
    if needs[7]:
        d_g_lrec = d_rec_gain(k_gi, dlows[1:], _x_hat(sv["q"], sv["lm"], sv["lr"], Hl), sv["rz"])
    if needs[8] or needs[9]:
        d_gih = kh_gi * dhighs[:, :, None]
        d_b_hin = d_gih.sum((0, 1)).flatten()
        d_g_hin = (d_gih * _x_hat(sv["p"], sv["pm"], sv["pr"], Hh).view(C, B, 3, Hh)).sum((0, 1)).flatten()
    return (dxn if needs[0] else None, dlows[0] if needs[1] else None, dhigh if needs[2] else None,
            d_w_high, d_u_low, d_w_up, d_g_hl, d_g_lrec, d_g_hin, d_b_hin, d_g_hrec)


def _backward_loop(d_hs, dlows, dhighs, dhpn, dxh, dxn, dhigh, k_gi, k_q, k_p, kh_q, zl, zh, q, lm, lr, p, pm, pr,
                   hp, hm, hr, g_hl, pk_high: PackedWeight, pk_low: PackedWeight, pk_up: PackedWeight, T: int, N: int,
                   tbptt: int, pos: int, eps: float) -> list[torch.Tensor]:
    """`_backward`'s reverse loop over steps (csrc/hrnn_loops.cpp's backward_loop is the same
    loop, compiled): fills dlows (dlows[S] set by the caller), dhighs, dhpn and dxn (zeros on
    entry); returns [dq, dp, dhp] stacked over steps and the gradient reaching the initial high
    state. pk_* hold the transposed weights (products d @ W)."""
    S, B, Hl = dlows.shape[0] - 1, dlows.shape[1], dlows.shape[2]
    C, Hh = dhighs.shape[0], dhighs.shape[2]
    L = C // N
    norm = _HighNorm(3 * Hl, Hl, Hh, eps)
    zl, zh, k_q_s, k_p_c, kh_q_c = (v.unbind(0) for v in (zl, zh, k_q, k_p, kh_q))
    q_s, lm_s, lr_s = q.unbind(0), lm.unbind(0), lr.unbind(0)
    dq, dp, dhp = [None] * S, [None] * C, [None] * C
    dl_s, dl3_s = dlows.unbind(0), dlows[:, :, None].unbind(0)
    for t in reversed(range(L)):
        if d_hs is not None:
            dhigh = dhigh + d_hs[:, t]
        for n in reversed(range(N)):
            c = t * N + n
            k0, end = c * T, (c + 1) * T
            dhighs[c] = dhigh
            dp[c] = dp_c = _ln_dx(torch.mul(k_p_c[c], dhigh[:, None]), p[c], pm[c], pr[c], Hh)
            pk_up.addmm(dl_s[end], dp_c, out=dl_s[end])
            for k in range(end - 1, k0 - 1, -1):
                dq[k] = dq_k = _ln_dx(torch.mul(k_q_s[k], dl3_s[k + 1]), q_s[k], lm_s[k], lr_s[k], Hl)
                pk_low.addmm(torch.mul(dl_s[k + 1], zl[k]), dq_k, out=dl_s[k])
            dgi_low = torch.sum(k_gi[k0:end] * dlows[k0 + 1:end + 1, :, None], dim=0, out=dhpn[c].view(B, 3, Hl))
            dgi_low = dgi_low.view(B, 3 * Hl)
            dxn[:, t] += dgi_low
            torch.mul(dgi_low, g_hl, out=dxh[:, :3 * Hl])
            torch.mul(kh_q_c[c], dhigh[:, None], out=dxh[:, 3 * Hl:].view(B, 3, Hh))
            dhp[c] = dhp_c = norm.dx(dxh, hp[c], hm[c], hr[c])
            dhigh = pk_high.addmm(dhigh * zh[c], dhp_c)
        if tbptt > 0 and (pos + t) % tbptt == 0 and pos + t > 0:
            dl_s[t * N * T].zero_()
            dhigh = torch.zeros_like(dhigh)
    return [torch.stack(dq), torch.stack(dp), torch.stack(dhp), dhigh]


@torch.compiler.disable  # a loop of thousands of steps: dynamo would unroll it (train.py --compile never finished)
def hierarchical_scan(xn: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                      w_high: torch.Tensor, u_low: torch.Tensor, w_up: torch.Tensor,
                      g_hl: torch.Tensor, g_lrec: torch.Tensor, g_hin: torch.Tensor, b_hin: torch.Tensor,
                      g_hrec: torch.Tensor, T: int, N: int, tbptt: int, pos: int, eps: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two-level recurrence over xn (B, L, 3Hl) from states (low, high): (high states after
    every token (B, L, Hh), last low, last high). Arguments and results as in
    `hierarchical_scan_naive` (same values); the gradient is the hand-written backward through
    time of `_HierarchicalScan` when any input needs one, else no graph is built. All tensors
    share one dtype (float32 / float64); call it with autocast disabled."""
    tensors = (xn, low, high, w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec)
    if torch.is_grad_enabled() and any(v.requires_grad for v in tensors):
        return _HierarchicalScan.apply(*tensors, int(T), int(N), int(tbptt), int(pos), float(eps))
    with torch.no_grad():
        hs, low, high, _ = _forward(*tensors, int(T), int(N), float(eps), save=False)
    return hs, low, high
