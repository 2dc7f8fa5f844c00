"""The leaky echo-state recurrence of the `tanh` reservoir mode, as a loop with a hand-written
backward through time (`tanh_scan`; reference loop: `tanh_scan_naive.py`) and through PyTorch's
fused RNN kernel (`fused_rnn_tanh`, leak 1 on CUDA).

h_t = (1 - a) h_{t-1} + a n_t with n_t = tanh(pre_t + W h_{t-1}). Under autograd the loop records
addmm / tanh / lerp nodes per step and a stack of all states; here one `autograd.Function`
covers the sequence: forward writes each step into a preallocated time-major buffer (the
product with W packed once, `unified.ops.packed_matmul`; in-place tanh), and backward runs
    d pre_t = g_t a (1 - n_t^2)   (the coefficient a (1 - n^2) for all steps in one op)
    g_{t-1} = dh_{t-1} + (1 - a) g_t + d pre_t W      (one addmm per step, two ops with a < 1)
with the gradient of W (when it has one; the reservoir's is frozen) as one product over all steps.
"""
from __future__ import annotations

from typing import Optional

import torch

from unified.ops.packed_matmul import PackedWeight
from unified.ops.precision import float32_scan


def _forward(pre: torch.Tensor, h0: torch.Tensor, w: torch.Tensor, leak: float, save: bool
             ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """States (T, B, n) time-major, and the tanh outputs n_t (T, B, n) when `save` (they are the
    states when leak is 1)."""
    B, L, n = pre.shape
    hs = pre.new_empty(L, B, n)
    leaky = leak != 1.0
    news = pre.new_empty(L if save else 1, B, n) if leaky else hs
    pw, h = PackedWeight(w), h0
    for t in range(L):
        new = pw.addmm(pre[:, t], h, out=news[t if save or not leaky else 0]).tanh_()
        h = torch.lerp(h, new, leak, out=hs[t]) if leaky else new
    return hs, (news if save else None)


class _TanhScan(torch.autograd.Function):
    """`tanh_scan` with the backward through time of the module docstring."""

    @staticmethod
    def forward(ctx, pre, h0, w, leak: float):
        hs, news = _forward(pre, h0, w, leak, save=True)
        ctx.save_for_backward(h0, w, hs, news)
        ctx.leak = leak
        return hs.transpose(0, 1).contiguous(), hs[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_hs, d_last):
        h0, w, hs, news = ctx.saved_tensors
        a = ctx.leak
        L, B, n = hs.shape
        with float32_scan(hs):
            coef = (1.0 - news * news).mul_(a)
            dpre = torch.empty_like(hs)
            g = torch.zeros_like(h0) if d_last is None else d_last.clone()
            pw = PackedWeight(w.t())  # the reverse loop's products d @ W
            if d_hs is not None:
                g += d_hs[:, L - 1]
            for t in reversed(range(L)):
                da = torch.mul(g, coef[t], out=dpre[t])
                base = g.mul(1.0 - a) if a != 1.0 else None
                if t > 0 and d_hs is not None:
                    base = d_hs[:, t - 1] if base is None else base.add_(d_hs[:, t - 1])
                g = pw.mm(da) if base is None else pw.addmm(base, da)
            d_w = None
            if ctx.needs_input_grad[2]:
                prev = torch.cat([h0[None], hs[:-1]]).reshape(-1, n)
                d_w = dpre.reshape(-1, n).t() @ prev
        return dpre.transpose(0, 1), g, d_w, None


@torch.compiler.disable  # a loop over time: dynamo would unroll it
def tanh_scan(pre: torch.Tensor, h: torch.Tensor, w: torch.Tensor, leak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaky echo-state recurrence h_t = lerp(h_{t-1}, tanh(pre_t + W h_{t-1}), leak) over time.
    pre: (B, T, n) input drive (precomputed for the whole sequence), h: (B, n), w: (n, n) ->
    (states (B, T, n), last state). Same values as `tanh_scan_naive`; the gradient is the
    hand-written backward through time (`_TanhScan`) when an input needs one."""
    if torch.is_grad_enabled() and (pre.requires_grad or h.requires_grad or w.requires_grad):
        return _TanhScan.apply(pre, h, w, float(leak))
    with torch.no_grad():
        hs, _ = _forward(pre, h, w, float(leak), save=False)
    return hs.transpose(0, 1).contiguous(), hs[-1].clone()


def fused_rnn_tanh(u: torch.Tensor, h0: torch.Tensor, w_in: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = tanh(W_in u_t + W h_{t-1}) by PyTorch's fused single-layer RNN kernel (what
    nn.RNN(nonlinearity='tanh', bias=False) calls), with our frozen tensors as its weights."""
    train = torch.is_grad_enabled()  # cuDNN keeps its backward workspace only in train mode
    out, h = torch.rnn_tanh(u, h0[None], [w_in, w], False, 1, 0.0, train, False, True)
    return out, h[0]
