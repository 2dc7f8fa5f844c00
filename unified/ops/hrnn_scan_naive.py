"""Reference for `unified.ops.hrnn_scan`: the two-level LayerNorm-GRU recurrence of `hrnn` as a
plain loop of differentiable ops, so autograd derives its gradient. The tests compare the fused
scan (hand-written backward through time) against it, values and gradients in float64.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def group_ln(x: torch.Tensor, gain: torch.Tensor, bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """Layer norm applied separately to each of the 3 gate pre-activations in x (B, 3H), with
    per-gate gain and optional bias (Ba et al. 2016). This is exactly `group_norm` with 3 groups,
    which does it in one kernel."""
    return F.group_norm(x, 3, gain, bias, eps)


def gru_update(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """GRU state update from normalised input-side (gi) and recurrent-side (gh) gate
    pre-activations, both (B, 3H) ordered [reset, update, candidate]:
    r, z = sigmoid(gi_rz + gh_rz); n = tanh(gi_n + r gh_n); h' = (1 - z) n + z h."""
    H = h.shape[1]
    rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
    n = torch.tanh(torch.addcmul(gi[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]))
    return torch.lerp(n, h.to(n.dtype), rz[:, H:].to(n.dtype))  # autocast may mix bf16 and fp32


def hierarchical_scan_naive(xn: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                            w_high: torch.Tensor, u_low: torch.Tensor, w_up: torch.Tensor,
                            g_hl: torch.Tensor, g_lrec: torch.Tensor, g_hin: torch.Tensor, b_hin: torch.Tensor,
                            g_hrec: torch.Tensor, T: int, N: int, tbptt: int, pos: int, eps: float
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the two-level recurrence over xn (B, L, 3Hl) = LN(W_x x) + b (the token part of the
    low cell's input, normalised and biased up front). Returns the high states after every token
    (B, L, Hh) and the final (low, high) states.

    w_high: (3Hl + 3Hh, Hh) fused [W_h; U_h] applied to the high state; u_low: (3Hl, Hl) the low
    cell's recurrent weight; w_up: (3Hh, Hl) the high cell's input weight (from the low state).
    Each product gets its own per-gate layer norm with gain g_* (3H,) (Ba et al. 2016 normalise
    each source separately). tbptt > 0 detaches the states before absolute positions that are
    multiples of tbptt."""
    n_low = u_low.shape[0]
    w_high_t, u_low_t, w_up_t = w_high.t(), u_low.t(), w_up.t()
    outs = []
    for t, x_t in enumerate(xn.unbind(1)):
        if tbptt > 0 and (pos + t) % tbptt == 0 and pos + t > 0:
            low = low.detach()
            high = high.detach()
        for _n in range(N):
            hp = torch.mm(high, w_high_t)
            gi_low = x_t + group_ln(hp[:, :n_low], g_hl, None, eps)
            for _s in range(T):
                low = gru_update(gi_low, group_ln(torch.mm(low, u_low_t), g_lrec, None, eps), low)
            gi_high = group_ln(torch.mm(low, w_up_t), g_hin, b_hin, eps)
            high = gru_update(gi_high, group_ln(hp[:, n_low:], g_hrec, None, eps), high)
        outs.append(high)
    return torch.stack(outs, dim=1), low, high
