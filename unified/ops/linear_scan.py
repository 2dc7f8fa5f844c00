"""Chunked parallel scan of a real block-diagonal linear recurrence (the `linear` reservoir mode).

A real n x n matrix W (n even) is diagonalised once into real 2x2 rotation-scale blocks,
W = P D P^-1 (`real_block_eig`: the real form of the complex eigendecomposition). In that
eigenbasis the recurrence y_t = D y_{t-1} + v_t runs as a chunked parallel scan over time, like
diagonal linear RNNs / SSMs (Orvieto et al. 2023, LRU): `linear_chunked_scan`; `linear_step` is
its O(1) decoding step. `unified.ops.linear_scan_naive` is the step-by-step reference the tests
compare against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unified.errors import ConfigError


def real_block_eig(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real block diagonalisation W = P D P^-1 (float64) of an n x n matrix, n even.

    Returns `lam` (n, 2): per state slot s the (re, im) of an eigenvalue, and `P` (n, n) real.
    Slots come in fixed pairs (2k, 2k+1) = (s, s ^ 1): a complex pair a +- ib with eigenvector v
    takes one slot pair (columns Re v, Im v of P; slot 2k stores a - ib, slot 2k+1 a + ib), the
    real eigenvalues (an even number, since n is) fill the remaining slot pairs two by two
    (im = 0). Then y' = D y reads y_s' = Re(lam_s) y_s - Im(lam_s) y_{s^1} for every slot, and
    D^k the same with lam_s^k: a static partner, so the scan needs no data-dependent indexing."""
    n = w.shape[0]
    evals, evecs = torch.linalg.eig(w)
    pos, real = evals.imag > 0, evals.imag == 0
    if n % 2 or 2 * int(pos.sum()) + int(real.sum()) != n:
        raise ConfigError("reservoir matrix must have even size and eigenvalues in exact conjugate pairs")
    vp, lp = evecs[:, pos], evals[pos]
    P = torch.cat([torch.stack([vp.real, vp.imag], dim=2).reshape(n, -1), evecs[:, real].real], dim=1)
    lam = torch.cat([torch.stack([lp.conj(), lp], dim=1).reshape(-1), evals[real]])
    lam = torch.stack([lam.real, lam.imag], dim=1)
    err = (w @ P - P @ block_matrix(lam)).norm() / (w.norm() * P.norm())
    if not err < 1e-8:
        raise ConfigError(f"reservoir matrix is not diagonalisable (residual {err:.1e}); try another init_seed or sparsity")
    return lam, P


def block_matrix(lam: torch.Tensor) -> torch.Tensor:
    """The real block-diagonal D of `real_block_eig`'s eigen-data `lam` (n, 2)."""
    D = torch.diag(lam[:, 0])
    idx = torch.arange(lam.shape[0], device=lam.device)
    D[idx, idx ^ 1] -= lam[:, 1]
    return D


def swap_pairs(y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """y with slots 2k and 2k+1 exchanged along `dim` (the partner y_{s^1} of every slot)."""
    dim = dim % y.dim()
    return y.unflatten(dim, (-1, 2)).flip(dim + 1).flatten(dim, dim + 1)


def eig_powers(lam: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re and Im of lam^k for k = 0..n (shape (n+1, slots)), computed in float64 and returned in
    float32: within-chunk powers only, so float32 errors stay bounded for any sequence length."""
    c = torch.complex(lam[:, 0].double(), lam[:, 1].double())
    pw = torch.cumprod(c.expand(n, -1), dim=0)
    pw = torch.cat([torch.ones_like(pw[:1]), pw])
    return pw.real.float(), pw.imag.float()


def linear_step(v: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """One step of the block-diagonal recurrence y' = D y + v (v, y: (B, n))."""
    return lam[:, 0] * y - lam[:, 1] * swap_pairs(y) + v


def linear_chunked_scan(v: torch.Tensor, y0: torch.Tensor, lam: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All states y_t = D y_{t-1} + v_t, t = 1..T, in parallel over time. v: (B, T, n), y0: (B, n).

    Within each chunk of length L, y_i = sum_{j<=i} D^{i-j} v_j is one batched matmul (batch =
    state slot) with the stacked lower-triangular Toeplitz kernels Re lam_s^(i-j) and
    Im lam_{s^1}^(i-j): y_s = K^re_s v_s - (K^im_{s^1} v_{s^1}) (the second term computed at slot
    s^1, then swapped back). Chunk-end states then carry over with D^L (a loop over T/L chunks on
    (B, n) tensors only), and every position adds D^(i+1) times the previous chunk's end state.
    Returns (states (B, T, n), last state (B, n))."""
    B, T, n = v.shape
    L = max(1, min(chunk, T))
    C = -(-T // L)
    pr, pi = (p.to(device=v.device, dtype=v.dtype) for p in eig_powers(lam, L))
    lag = torch.arange(L, device=v.device)[:, None] - torch.arange(L, device=v.device)[None, :]
    future = (lag < 0)[..., None]
    lag = lag.clamp(min=0)
    kernel = torch.cat([pr[lag].masked_fill(future, 0.0), swap_pairs(pi)[lag].masked_fill(future, 0.0)], dim=0)
    vs = F.pad(v, (0, 0, 0, C * L - T)).view(B, C, L, n).permute(3, 2, 0, 1).reshape(n, L, B * C)
    out = torch.bmm(kernel.permute(2, 0, 1).contiguous(), vs)  # (n, 2L, B*C)
    intra = (out[:, :L] - swap_pairs(out[:, L:], dim=0)).view(n, L, B, C).permute(2, 3, 1, 0)  # (B, C, L, n)
    ends, y = [y0], y0
    for c in range(C - 1):
        y = pr[L] * y - pi[L] * swap_pairs(y) + intra[:, c, L - 1]
        ends.append(y)
    prev = torch.stack(ends, dim=1)[:, :, None]  # (B, C, 1, n): state before each chunk
    ys = intra + pr[1:] * prev - pi[1:] * swap_pairs(prev)
    ys = ys.reshape(B, C * L, n)[:, :T]
    return ys, ys[:, -1]
