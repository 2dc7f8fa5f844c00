"""Reference for `signed_scan`: the diagonal linear recurrence one step at a time.

Per head h, with a decay a_t in [-1, 1] (any real value works here) and a state H_t of shape (P, N):
    H_t = a_t H_{t-1} + dt_t x_t B_t^T        y_t = H_t C_t
This is the definition the chunked scan must reproduce. It is O(T) sequential Python steps, so it
is only for tests and benchmarks.
"""
from __future__ import annotations

import torch


def scan_naive(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
               initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step recurrence. x (b, T, H, P), dt and a (b, T, H), B and C (b, T, N),
    initial_state (b, H, P, N) or None (zeros). Returns y (b, T, H, P) and the final state, both
    in the inputs' dtype (run it in float64 for a reference)."""
    b, T, H, P = x.shape
    N = B.shape[-1]
    h = x.new_zeros(b, H, P, N) if initial_state is None else initial_state.to(x.dtype)
    ys = []
    for t in range(T):
        h = a[:, t, :, None, None] * h + (x[:, t] * dt[:, t, :, None])[..., None] * B[:, t, None, None, :]
        ys.append(h @ C[:, t, None, :, None])
    return torch.stack(ys, dim=1).squeeze(-1), h
