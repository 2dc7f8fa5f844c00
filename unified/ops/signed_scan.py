"""Exact chunked scan of a diagonal linear recurrence whose decays may be negative.

Grazzi et al. 2025 ("Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues", ICLR)
show that diagonal SSMs with decays in [0, 1] (Mamba's exp(dt A)) cannot track parity, and that
the range [-1, 1] lets them; for Mamba they use a = 2 exp(dt A) - 1 (`signed_decay`). Per head:
    H_t = a_t H_{t-1} + dt_t x_t B_t^T        y_t = H_t C_t       (reference: signed_scan_naive.py)

The SSD chunked form (`unified.ops.ssd_scan`) writes every segment product
prod_{r=s+1..t} a_r as exp(cs_t - cs_s) of cumulative log-decays. With signed decays the log of a
negative number does not exist, so each product is carried as a magnitude and a sign:
    |prod| = exp(sum_{r=s+1..t} log|a_r|)     sign = (-1)^(number of negative a_r in s+1..t)
Both sums are *segment sums* built by a masked cumulative sum over each (L+1) x (L+1) block (the
stable "segsum" of the Mamba-2 reference code: no subtraction of large cumulative values, and a
zero decay gives log 0 = -inf, hence an exact zero, never inf - inf). The sign count is a sum of
0/1 values, exact in floating point. Index 0 of each block is a virtual position of decay 1, so
one block holds every product the scan needs:
    P(s, t) = S[t+1, s+1]  inside the chunk      Q(t) = S[t+1, 0]  from the chunk start through t
    to_end(s) = S[L, s+1]                        chunk product = S[L, 0]
Then, as in SSD: y_t = sum_{s<=t} P(s,t) (C_t . B_s) dt_s x_s + Q(t) H_{c-1} C_t, chunk states
sum_s to_end(s) dt_s x_s B_s^T, and H_c = (chunk product) H_{c-1} + (chunk state).

The scan runs in at least float32 with autocast disabled (bf16 products would lose the decays'
precision). mamba-ssm's fused kernels take A and compute exp(dt A) inside, so they can only
produce decays in (0, 1]: signed decays always run here, and asking for the fused backend is an
error (`signed_scan(..., backend="mamba_ssm")`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unified.errors import ConfigError
from unified.ops.precision import float32_scan, scan_dtype
from unified.ops.ssd_scan import pad_to_chunks

BACKENDS = ("auto", "torch", "mamba_ssm")


def signed_decay(dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Grazzi et al.'s extended range for Mamba: a = 2 exp(dt A) - 1, in (-1, 1] for dt >= 0 and
    A < 0 (dt (..., H), A (H,)). a -> -1 as dt A -> -inf (a sign flip per step, what parity needs)."""
    return 2.0 * torch.exp(dt * A) - 1.0


def segment_sums(v: torch.Tensor) -> torch.Tensor:
    """S[..., i, j] = sum_{r=j+1..i} v[..., r] for i > j and 0 on and above the diagonal, from a
    masked cumulative sum (no differences of running totals). v (..., n) -> (..., n, n)."""
    n = v.shape[-1]
    strict = torch.ones(n, n, dtype=torch.bool, device=v.device).tril(-1)
    return v[..., :, None].expand(*v.shape, n).masked_fill(~strict, 0.0).cumsum(dim=-2)


def signed_products(a: torch.Tensor) -> torch.Tensor:
    """Every segment product of one chunk: a (..., L) -> (..., L+1, L+1) with entry [i, j] =
    prod_{r=j..i-1} a[r] for i >= j (1 on the diagonal) and 0 above it (causal)."""
    tiny = torch.finfo(a.dtype).tiny  # |a| = 0 gives a product of ~1e-38 at most, and a finite gradient
    log_mag = F.pad(torch.log(a.abs().clamp_min(tiny)), (1, 0))
    negatives = F.pad((a < 0).to(a.dtype), (1, 0))
    mag = segment_sums(log_mag)
    n = mag.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
    mag = mag.masked_fill(~causal, float("-inf")).exp()
    odd = torch.remainder(segment_sums(negatives), 2.0) > 0.5
    return torch.where(odd, -mag, mag)


def signed_scan_chunked(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                        chunk_size: int, initial_state: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked scan for training and prefill with per-position decays `a` of any sign.

    x (b, T, H, P), dt and a (b, T, H), B and C (b, T, N) (one group shared by the heads),
    initial_state (b, H, P, N) or None. Returns y (b, T, H, P) in x's dtype (no D skip term) and
    the final state (b, H, P, N) in at least float32. Any T: the last chunk is padded with a = 1
    and dt = 0, which leave the state unchanged."""
    dtype, work = x.dtype, scan_dtype(x)
    with float32_scan(x):
        x, dt, a, B, C = (t.to(work) for t in (x, dt, a, B, C))
        b, T, H, P = x.shape
        N = B.shape[-1]
        L, nc, (x, dt, a, B, C) = pad_to_chunks((x, dt, a, B, C), chunk_size, values=(0.0, 0.0, 1.0, 0.0, 0.0))
        x = x.reshape(b, nc, L, H, P).transpose(2, 3)  # (b, c, H, L, P)
        dt = dt.reshape(b, nc, L, H).transpose(2, 3)  # (b, c, H, L)
        a = a.reshape(b, nc, L, H).transpose(2, 3)
        B, C = B.reshape(b, nc, 1, L, N), C.reshape(b, nc, 1, L, N)
        prod = signed_products(a)  # (b, c, H, L+1, L+1)
        xdt = x * dt[..., None]

        y = ((C @ B.transpose(-1, -2)) * prod[..., 1:, 1:]) @ xdt  # inside each chunk
        S = (xdt * prod[..., -1, 1:, None]).transpose(-1, -2) @ B  # each chunk's own state (b, c, H, P, N)
        h = x.new_zeros(b, H, P, N) if initial_state is None else initial_state.to(work)
        total = prod[..., -1, 0, None, None]  # product over the whole chunk (b, c, H, 1, 1)
        starts = []
        for c in range(nc):
            starts.append(h)
            h = total[:, c] * h + S[:, c]
        prev = torch.stack(starts, dim=1)  # state entering each chunk
        y = y + (C @ prev.transpose(-1, -2)) * prod[..., 1:, 0, None]
        y = y.transpose(2, 3).reshape(b, nc * L, H, P)[:, :T]
    return y.to(dtype), h


def signed_scan_step(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: x (b, H, P), dt and a (b, H), B and C (b, N), state (b, H, P, N).
    Returns y (b, H, P) in x's dtype and the new state in at least float32."""
    dtype, work = x.dtype, scan_dtype(x)
    with float32_scan(x):
        x, dt, a, B, C, state = (t.to(work) for t in (x, dt, a, B, C, state))
        state = a[..., None, None] * state + (x * dt[..., None])[..., None] * B[:, None, None, :]
        y = (state @ C[:, None, :, None]).squeeze(-1)
    return y.to(dtype), state


def signed_scan(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int, state: torch.Tensor | None = None, backend: str = "auto"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch: the O(1) step for one cached token, else the chunked scan (shapes as in
    `signed_scan_chunked`). `backend` "auto" / "torch" run this file on every device; "mamba_ssm"
    is refused with a ConfigError, since the fused kernels cannot represent a negative decay."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown scan backend {backend!r} for signed decays; accepted: {', '.join(BACKENDS)}")
    if backend == "mamba_ssm":
        raise ConfigError("the mamba_ssm fused scan computes decays exp(dt*A) in (0, 1] and cannot run signed "
                          "decays (decay_range='signed'); use the torch scan (backend 'auto' or 'torch') or "
                          "decay_range='unit'")
    if state is not None and x.shape[1] == 1:
        y, new = signed_scan_step(x[:, 0], dt[:, 0], a[:, 0], B[:, 0], C[:, 0], state)
        return y[:, None], new
    return signed_scan_chunked(x, dt, a, B, C, chunk_size, state)
