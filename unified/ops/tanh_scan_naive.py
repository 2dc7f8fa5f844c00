"""Reference for `unified.ops.tanh_scan`: the leaky echo-state recurrence as a plain loop of
differentiable ops (autograd derives the gradient); the tests compare the fused scan to it."""
from __future__ import annotations

import torch


def tanh_scan_naive(pre: torch.Tensor, h: torch.Tensor, w: torch.Tensor, leak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = lerp(h_{t-1}, tanh(pre_t + W h_{t-1}), leak) over time: pre (B, T, n), h (B, n),
    w (n, n) -> (states (B, T, n), last state)."""
    wt, outs = w.t(), []
    for p in pre.unbind(1):
        new = torch.tanh(torch.addmm(p, h, wt))
        h = new if leak == 1.0 else torch.lerp(h, new, leak)
        outs.append(h)
    return torch.stack(outs, dim=1), h
