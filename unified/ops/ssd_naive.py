"""Reference for the SSD scan (`unified.ops.ssd_scan`): the Mamba-2 recurrence one step at a time.

Per head h, with the scalar decay A_h < 0:
    H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T        y_t = H_t C_t
which is the diagonal linear recurrence of `unified.ops.signed_scan_naive` with the decay
a_t = exp(dt_t A_h), so both kernels share one step-by-step definition. O(T) sequential Python
steps: for tests and benchmarks only (tests/test_ssm.py, bench/ssm_scan.py).
"""
from __future__ import annotations

import torch

from unified.ops.signed_scan_naive import scan_naive


def ssd_naive(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step SSD recurrence. x (b, T, H, P), dt (b, T, H), A (H,), B and C (b, T, N),
    initial_state (b, H, P, N) or None (zeros). Returns y (b, T, H, P) without the D term and
    the final state, in the inputs' dtype (run it in float64 for a reference)."""
    return scan_naive(x, dt, torch.exp(dt * A), B, C, initial_state)
