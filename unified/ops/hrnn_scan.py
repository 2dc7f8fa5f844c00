"""The two-level LayerNorm-GRU recurrence of `hrnn` with a hand-written backward through time.

The recurrence (see `unified.models.hrnn`; reference loop: `hrnn_scan_naive.py`): per token t,
N cycles of [T low GRU steps driven by (x_t, high), then one high GRU step driven by low]. Run
as a loop of differentiable ops, autograd records ~10 nodes per cell application and replays
them one by one in backward, each weight gradient a K = batch matmul per step; on CPU that
bookkeeping, not the arithmetic, was ~97% of a training step. Here one `autograd.Function`
covers the whole sequence:

- forward runs the same ops outside autograd (`native_group_norm`, which also returns the
  per-gate means / inverse std backward needs) and writes every state and gate activation into
  preallocated (steps, B, .) buffers (in-place sigmoid / tanh, `out=` products);
- backward first turns the saved activations into per-step gate coefficients, all steps in one
  batched op each (for h' = n + z (h - n) with n = tanh(gi_n + r gh_n), r, z = sigmoid(.)):
      c_n = (1 - z)(1 - n^2),  c_z = (h - n) z (1 - z),  c_r = c_n gh_n r (1 - r)
      d gi = dh' [c_r, c_z, c_n],   d gh = dh' [c_r, c_z, c_n r],   dh += dh' z
  so the reverse loop per low step is: one broadcast multiply, the fused group-norm backward
  kernel, and one addmm (dh_prev = dh z + d q U); the input-side gradient of a cycle is one
  reduction over its T steps;
- weight and gain gradients are summed over all steps at the end: one (3H, steps * B) @
  (steps * B, H) product per weight, one batched group-norm backward per gain.
Values equal the reference loop's (same ops, same order); gradients agree with autograd of the
reference to rounding (float64 gradcheck in tests/test_hrnn_scan.py). Without gradients the same
forward runs with one-step buffers. tbptt zeroes the carried state gradients at the truncation
boundaries, as detaching the states does. The Function is once-differentiable.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from unified.ops.precision import float32_scan

_GN_BACKWARD = torch.ops.aten.native_group_norm_backward


def _gn(x: torch.Tensor, gain: torch.Tensor, bias: Optional[torch.Tensor], groups: int, eps: float):
    """Group norm of x (B, C) with `groups` groups: (y, mean (B, G), rstd (B, G))."""
    return torch.native_group_norm(x, gain, bias, x.shape[0], x.shape[1], 1, groups, eps)


def _gn_dx(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor,
           groups: int) -> torch.Tensor:
    """Input gradient of `_gn` (one fused kernel)."""
    return _GN_BACKWARD(dy, x, mean, rstd, gain, x.shape[0], x.shape[1], 1, groups, [True, False, False])[0]


def _gn_dparams(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor,
                groups: int, bias: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Gain (and bias) gradients of `_gn` summed over every leading index of dy / x (steps, B, C)."""
    C = x.shape[-1]
    x2, dy2 = (v.reshape(-1, C).contiguous() for v in (x, dy))  # the kernel reads contiguous rows
    m2, r2 = (v.reshape(-1, groups).contiguous() for v in (mean, rstd))
    _, dg, db = _GN_BACKWARD(dy2, x2, m2, r2, gain, x2.shape[0], C, 1, groups, [False, True, bias])
    return dg, db


class _HighNorm:
    """Per-gate layer norms of the fused high projection hp = high @ [W_h; U_h]^T (B, 3Hl + 3Hh):
    one 6-group norm when Hl == Hh, else one 3-group norm per part."""

    def __init__(self, g_hl: torch.Tensor, g_hrec: torch.Tensor, eps: float):
        self.n_low, self.g_hl, self.g_hrec, self.eps = g_hl.shape[0], g_hl, g_hrec, eps
        self.shared = g_hl.shape[0] == g_hrec.shape[0]
        self.gain = torch.cat([g_hl, g_hrec]) if self.shared else None

    def forward(self, hp: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if self.shared:
            y, m, r = _gn(hp, self.gain, None, 6, self.eps)
            return y, (m, r)
        yl, ml, rl = _gn(hp[:, :self.n_low].contiguous(), self.g_hl, None, 3, self.eps)
        yh, mh, rh = _gn(hp[:, self.n_low:].contiguous(), self.g_hrec, None, 3, self.eps)
        return torch.cat([yl, yh], dim=1), (torch.cat([ml, mh], dim=1), torch.cat([rl, rh], dim=1))

    def dx(self, dy: torch.Tensor, hp: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return _gn_dx(dy, hp, m, r, self.gain, 6)
        n, part = self.n_low, lambda v, sl: v[:, sl].contiguous()  # noqa: E731 (the kernels need contiguous rows)
        lo, hi = slice(None, n), slice(n, None)
        return torch.cat([_gn_dx(part(dy, lo), part(hp, lo), part(m, slice(None, 3)), part(r, slice(None, 3)), self.g_hl, 3),
                          _gn_dx(part(dy, hi), part(hp, hi), part(m, slice(3, None)), part(r, slice(3, None)),
                                 self.g_hrec, 3)], dim=1)

    def dparams(self, dy: torch.Tensor, hp: torch.Tensor, m: torch.Tensor, r: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.n_low
        if self.shared:
            dg, _ = _gn_dparams(dy, hp, m, r, self.gain, 6, False)
            return dg[:n], dg[n:]
        dl, _ = _gn_dparams(dy[..., :n], hp[..., :n], m[..., :3], r[..., :3], self.g_hl, 3, False)
        dh, _ = _gn_dparams(dy[..., n:], hp[..., n:], m[..., 3:], r[..., 3:], self.g_hrec, 3, False)
        return dl, dh


def _gru_step(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, rz_out: torch.Tensor, n_out: torch.Tensor,
              h_out: torch.Tensor) -> None:
    """GRU update into preallocated outputs: rz = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r gh_n),
    h' = lerp(n, h, z) (h_out may be h itself)."""
    H = h.shape[1]
    torch.add(gi[:, :2 * H], gh[:, :2 * H], out=rz_out).sigmoid_()
    torch.addcmul(gi[:, 2 * H:], rz_out[:, :H], gh[:, 2 * H:], out=n_out).tanh_()
    torch.lerp(n_out, h, rz_out[:, H:], out=h_out)


def _gru_coefficients(rz: torch.Tensor, n: torch.Tensor, h_prev: torch.Tensor, gh_n: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step gate coefficients (steps, B, 3H) of the input-side and recurrent-side
    pre-activation gradients (module docstring), for all steps at once."""
    H = n.shape[-1]
    r, z = rz[..., :H], rz[..., H:]
    cn = (1.0 - z) * (1.0 - n * n)
    cz = (h_prev - n) * z * (1.0 - z)
    cr = cn * gh_n * r * (1.0 - r)
    return torch.cat([cr, cz, cn], dim=-1), torch.cat([cr, cz, cn * r], dim=-1)


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
    q, rz, nb = new(S, B, 3 * Hl), new(S, B, 2 * Hl), new(S, B, Hl)
    hp, p, rzh, nh = new(C, B, 3 * Hl + 3 * Hh), new(C, B, 3 * Hh), new(C, B, 2 * Hh), new(C, B, Hh)
    hs = new(B, L, Hh)
    norm = _HighNorm(g_hl, g_hrec, eps)
    w_high_t, u_low_t, w_up_t = w_high.t(), u_low.t(), w_up.t()
    keep: dict[str, list] = {name: [] for name in ("gh", "lm", "lr", "hpn", "hm", "hr", "pm", "pr")}
    k = c = 0
    for t in range(L):
        x_t = xn[:, t]
        for _n in range(N):
            ci = c if save else 0
            hp_c = torch.mm(highs[ci], w_high_t, out=hp[ci])
            hpn, (hm, hr) = norm.forward(hp_c)
            gi_low = x_t + hpn[:, :3 * Hl]
            for _s in range(T):
                ki = k if save else 0
                q_k = torch.mm(lows[ki], u_low_t, out=q[ki])
                gh, lm, lr = _gn(q_k, g_lrec, None, 3, eps)
                _gru_step(gi_low, gh, lows[ki], rz[ki], nb[ki], lows[ki + 1 if save else 0])
                if save:
                    for name, v in (("gh", gh), ("lm", lm), ("lr", lr)):
                        keep[name].append(v)
                k += 1
            p_c = torch.mm(lows[k if save else 0], w_up_t, out=p[ci])
            gih, pm, pr = _gn(p_c, g_hin, b_hin, 3, eps)
            _gru_step(gih, hpn[:, 3 * Hl:], highs[ci], rzh[ci], nh[ci], highs[ci + 1 if save else 0])
            if save:
                for name, v in (("hpn", hpn), ("hm", hm), ("hr", hr), ("pm", pm), ("pr", pr)):
                    keep[name].append(v)
            c += 1
        hs[:, t] = highs[c if save else 0]
    low_last, high_last = lows[-1].clone(), highs[-1].clone()
    saved = {}
    if save:
        saved = dict(lows=lows, highs=highs, q=q, rz=rz, nb=nb, hp=hp, p=p, rzh=rzh, nh=nh,
                     **{name: torch.stack(v) for name, v in keep.items()})
    return hs, low_last, high_last, saved


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
    norm = _HighNorm(g_hl, g_hrec, eps)
    k_gi, k_gh = _gru_coefficients(sv["rz"], sv["nb"], lows[:-1], sv["gh"][..., 2 * Hl:])
    zl = sv["rz"][..., Hl:]
    kh_gi, kh_gh = _gru_coefficients(sv["rzh"], sv["nh"], highs[:-1], sv["hpn"][..., 3 * Hl + 2 * Hh:])
    zh = sv["rzh"][..., Hh:]
    k_gi, k_gh, kh_gi, kh_gh = (v.view(*v.shape[:-1], 3, -1) for v in (k_gi, k_gh, kh_gi, kh_gh))
    new = lows.new_empty
    dlows, dq, dgh = new(S + 1, B, Hl), new(S, B, 3 * Hl), new(S, B, 3 * Hl)
    dhp, dhpn, dp, dgih = new(C, B, 3 * Hl + 3 * Hh), new(C, B, 3 * Hl + 3 * Hh), new(C, B, 3 * Hh), new(C, B, 3 * Hh)
    dxn = lows.new_zeros(B, L, 3 * Hl)
    dlows[S] = 0.0 if d_low is None else d_low
    dhigh = lows.new_zeros(B, Hh) if d_high is None else d_high
    for t in reversed(range(L)):
        if d_hs is not None:
            dhigh = dhigh + d_hs[:, t]
        for n in reversed(range(N)):
            c = t * N + n
            k0, end = c * T, (c + 1) * T
            torch.mul(kh_gi[c], dhigh[:, None], out=dgih[c].view(B, 3, Hh))
            dhpn_c = dhpn[c]
            torch.mul(kh_gh[c], dhigh[:, None], out=dhpn_c[:, 3 * Hl:].view(B, 3, Hh))
            dp_c = _gn_dx(dgih[c], sv["p"][c], sv["pm"][c], sv["pr"][c], g_hin, 3)
            dp[c] = dp_c
            dlows[end].addmm_(dp_c, w_up)
            for k in reversed(range(k0, end)):
                dl = dlows[k + 1]
                torch.mul(k_gh[k], dl[:, None], out=dgh[k].view(B, 3, Hl))
                dq_k = _gn_dx(dgh[k], sv["q"][k], sv["lm"][k], sv["lr"][k], g_lrec, 3)
                dq[k] = dq_k
                torch.addmm(dl * zl[k], dq_k, u_low, out=dlows[k])
            dgi_low = (k_gi[k0:end] * dlows[k0 + 1:end + 1, :, None]).sum(0).view(B, 3 * Hl)
            dhpn_c[:, :3 * Hl] = dgi_low
            dxn[:, t] += dgi_low
            dhp_c = norm.dx(dhpn_c, sv["hp"][c], sv["hm"][c], sv["hr"][c])
            dhp[c] = dhp_c
            dhigh = torch.addmm(dhigh * zh[c], dhp_c, w_high)
        if tbptt > 0 and (pos + t) % tbptt == 0 and pos + t > 0:
            dlows[t * N * T].zero_()
            dhigh = torch.zeros_like(dhigh)
    flat = lambda v: v.reshape(-1, v.shape[-1])  # noqa: E731
    d_w_high = flat(dhp).t() @ flat(highs[:-1]) if needs[3] else None
    d_u_low = flat(dq).t() @ flat(lows[:-1]) if needs[4] else None
    d_w_up = flat(dp).t() @ flat(lows[T::T]) if needs[5] else None
    d_g_hl = d_g_hrec = d_g_lrec = d_g_hin = d_b_hin = None
    if needs[6] or needs[10]:
        d_g_hl, d_g_hrec = norm.dparams(dhpn, sv["hp"], sv["hm"], sv["hr"])
    if needs[7]:
        d_g_lrec, _ = _gn_dparams(dgh, sv["q"], sv["lm"], sv["lr"], g_lrec, 3, False)
    if needs[8] or needs[9]:
        d_g_hin, d_b_hin = _gn_dparams(dgih, sv["p"], sv["pm"], sv["pr"], g_hin, 3, True)
    return (dxn if needs[0] else None, dlows[0] if needs[1] else None, dhigh if needs[2] else None,
            d_w_high, d_u_low, d_w_up, d_g_hl, d_g_lrec, d_g_hin, d_b_hin, d_g_hrec)


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
