"""The reservoir's linear-scan kernel (`unified.ops.linear_scan`) against its naive reference
(`unified.ops.linear_scan_naive`): the dense block-diagonal recurrence stepped through time."""
from __future__ import annotations

import pytest
import torch

from unified.ops.linear_scan import block_matrix, linear_chunked_scan, linear_step, real_block_eig
from unified.ops.linear_scan_naive import linear_scan_naive


def eigen_data(n: int = 12, radius: float = 0.95, seed: int = 0) -> torch.Tensor:
    """Eigen-data `lam` (n, 2) of a random dense float64 matrix scaled to spectral radius `radius`."""
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lam, _ = real_block_eig(w)
    return lam * (radius / torch.linalg.vector_norm(lam, dim=1).max())


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_chunked_scan_equals_naive_recurrence(chunk: int) -> None:
    """Every state and the last one match the step-by-step float64 reference to float32 level
    (the kernel's eigenvalue powers are float32 by design; T = 37: a partial last chunk for
    every chunk length but 1), from a nonzero initial state."""
    lam = eigen_data()
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 37, lam.shape[0], generator=g, dtype=torch.float64)
    y0 = torch.randn(3, lam.shape[0], generator=g, dtype=torch.float64)
    ref, ref_last = linear_scan_naive(v, y0, lam)
    ys, last = linear_chunked_scan(v, y0, lam, chunk)
    torch.testing.assert_close(ys, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, ref_last, atol=1e-5, rtol=1e-5)


def test_naive_reference_is_the_dense_recurrence_and_the_step_agrees() -> None:
    """The reference's first step is D y0 + v_1 with the dense block matrix, which `linear_step`
    (the decoding step) reproduces; a wrong eigen-data layout would fail both."""
    lam = eigen_data(n=8, seed=2)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(2, 1, 8, generator=g, dtype=torch.float64)
    y0 = torch.randn(2, 8, generator=g, dtype=torch.float64)
    ref, _ = linear_scan_naive(v, y0, lam)
    torch.testing.assert_close(ref[:, 0], y0 @ block_matrix(lam).T + v[:, 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(linear_step(v[:, 0], y0, lam), ref[:, 0], atol=1e-12, rtol=0)
