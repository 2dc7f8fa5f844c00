"""Reference for `linear_chunked_scan`: the recurrence y_t = D y_{t-1} + v_t one step at a time.

D is the dense real block-diagonal matrix of the eigen-data `lam` (`block_matrix`), so this is
the definition the chunked scan must reproduce, with no chunking, no powers of the eigenvalues
and no slot swapping. O(T) sequential steps: for tests and benchmarks only.
"""
from __future__ import annotations

import torch

from unified.ops.linear_scan import block_matrix


def linear_scan_naive(v: torch.Tensor, y0: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All states y_t = D y_{t-1} + v_t, t = 1..T, stepping through time. v (B, T, n), y0 (B, n),
    lam (n, 2). Returns (states (B, T, n), last state (B, n)) in v's dtype (run it in float64
    for a reference)."""
    D = block_matrix(lam.to(v.dtype))
    y, ys = y0.to(v.dtype), []
    for t in range(v.shape[1]):
        y = y @ D.T + v[:, t]
        ys.append(y)
    return torch.stack(ys, dim=1), y
