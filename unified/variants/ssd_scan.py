"""The state-space-duality (SSD) scan of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs",
arXiv:2405.21060), written from the paper's equations, plus the dispatch to mamba-ssm's fused
kernels when they are installed and the tensors are on CUDA.

Per head h (scalar decay A_h < 0, state H_t of shape (P, N), one group of B/C shared by heads):
    H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T        y_t = H_t C_t      (D x_t is added by the caller)
The chunked form splits time into chunks of length L. With cs_t the cumulative log decay
sum_{s<=t} dt_s A_h inside a chunk:
    intra-chunk  y_t += sum_{s<=t} exp(cs_t - cs_s) (C_t . B_s) dt_s x_s      (masked L x L form)
    chunk state  S_c  = sum_s exp(cs_L - cs_s) dt_s x_s B_s^T
    across       H_c  = exp(cs_L) H_{c-1} + S_c                             (T/L-step recurrence)
    inter-chunk  y_t += exp(cs_t) H_{c-1} C_t
Nothing of shape (batch, T, heads*P, N) is ever built: the largest tensors are the (L x L) decay
masks per chunk and head, and one state per chunk.
"""
from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import torch
import torch.nn.functional as F

log = logging.getLogger("unified")
_LOGGED: set[str] = set()  # backends already announced in the log (one line each per process)


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int, initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan for training and prefill.

    x (b, T, H, P), dt (b, T, H) (positive, after softplus), A (H,) (negative), B and C (b, T, N),
    initial_state (b, H, P, N) or None (zeros). Returns y (b, T, H, P) without the D skip term, in
    x's dtype, and the final state (b, H, P, N) in at least float32 (half-precision inputs are
    computed in float32). Any T works: the last chunk is padded with dt = 0, which leaves the
    state untouched (decay exp(0) = 1, input 0)."""
    dtype, work = x.dtype, torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(work) for t in (x, dt, A, B, C))
    b, T, H, P = x.shape
    N = B.shape[-1]
    L = max(1, min(int(chunk_size), T))
    pad = (-T) % L
    if pad:
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    nc = (T + pad) // L
    x = x.reshape(b, nc, L, H, P).transpose(2, 3)  # (b, c, H, L, P)
    dt = dt.reshape(b, nc, L, H).transpose(2, 3)  # (b, c, H, L)
    B, C = B.reshape(b, nc, 1, L, N), C.reshape(b, nc, 1, L, N)  # one group, broadcast over heads
    cs = torch.cumsum(dt * A[:, None], dim=-1)  # log decay from the chunk start through t
    xdt = x * dt[..., None]

    # 1. inside each chunk: y_t = sum_{s<=t} exp(cs_t - cs_s) (C_t . B_s) dt_s x_s
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    seg = (cs[..., :, None] - cs[..., None, :]).masked_fill(~causal, float("-inf"))
    y = ((C @ B.transpose(-1, -2)) * seg.exp()) @ xdt  # (b, c, H, L, P)

    # 2. the state each chunk contributes on its own (starting from zero)
    to_end = (cs[..., -1:] - cs).exp()  # decay from position s to the chunk end
    S = (xdt * to_end[..., None]).transpose(-1, -2) @ B  # (b, c, H, P, N)

    # 3. pass states across chunks: H_c = exp(cs_L) H_{c-1} + S_c
    h = x.new_zeros(b, H, P, N) if initial_state is None else initial_state.to(work)
    chunk_decay = cs[..., -1].exp()[..., None, None]  # (b, c, H, 1, 1)
    starts = []
    for c in range(nc):
        starts.append(h)
        h = chunk_decay[:, c] * h + S[:, c]
    prev = torch.stack(starts, dim=1)  # state entering each chunk, (b, c, H, P, N)

    # 4. what the entering state contributes: y_t += exp(cs_t) H_{c-1} C_t
    y = y + (C @ prev.transpose(-1, -2)) * cs.exp()[..., None]
    y = y.transpose(2, 3).reshape(b, nc * L, H, P)[:, :T]
    return y.to(dtype), h


def ssd_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step for decoding, O(1) in the sequence length.

    x (b, H, P), dt (b, H), A (H,), B and C (b, N), state (b, H, P, N). Returns y (b, H, P) in x's
    dtype (no D term) and the new state in at least float32."""
    dtype, work = x.dtype, torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C, state = (t.to(work) for t in (x, dt, A, B, C, state))
    decay = torch.exp(dt * A)[..., None, None]
    state = decay * state + (x * dt[..., None])[..., None] * B[:, None, None, :]
    y = (state @ C[:, None, :, None]).squeeze(-1)
    return y.to(dtype), state


@functools.lru_cache(maxsize=1)
def _mamba_kernels() -> SimpleNamespace | None:
    """mamba-ssm's fused Triton kernels, or None when the package is absent or does not import
    (no GPU build, missing Triton ...). Called only for CUDA tensors, at most once per process."""
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as exc:  # ImportError, or a broken CUDA / Triton install raising anything else
        log.info("mamba_ssm kernels unavailable (%s: %s); using the PyTorch chunked scan",
                 type(exc).__name__, exc)
        return None
    return SimpleNamespace(chunk_scan=mamba_chunk_scan_combined, state_update=selective_state_update)


def scan_backend(device: torch.device | str) -> str:
    """Which SSD implementation runs for tensors on `device`: "mamba_ssm" (fused kernels, CUDA
    with mamba-ssm installed) or "torch-chunked" (this file). Recorded in results metadata.
    CPU devices never try to import mamba_ssm."""
    if torch.device(device).type == "cuda" and _mamba_kernels() is not None:
        return "mamba_ssm"
    return "torch-chunked"


def _announce(backend: str, device: torch.device) -> None:
    """Log once per process which scan backend runs."""
    if backend not in _LOGGED:
        _LOGGED.add(backend)
        log.info("SSD scan backend: %s (device %s)", backend, device)


def _kernel_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 chunk_size: int, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan through mamba-ssm: `selective_state_update` for one decoding step,
    `mamba_chunk_scan_combined` otherwise. dt is already positive (no bias, no softplus inside),
    D and the gate are applied by the caller, and B/C form one group (b, T, 1, N)."""
    k = _mamba_kernels()
    A = A.float()
    if state is not None and x.shape[1] == 1:
        P, N = x.shape[-1], B.shape[-1]
        new = state.float().clone()  # the kernel updates the state in place
        y = k.state_update(new, x[:, 0], dt[:, 0, :, None].expand(-1, -1, P), A[:, None, None].expand(-1, P, N),
                           B[:, 0, None, :], C[:, 0, None, :])
        return y[:, None], new
    init = None if state is None else state.float().contiguous()
    y, final = k.chunk_scan(x.contiguous(), dt.contiguous(), A, B[:, :, None, :].contiguous(),
                            C[:, :, None, :].contiguous(), chunk_size, initial_states=init,
                            return_final_states=True)
    return y, final


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             chunk_size: int, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch: fused kernels on CUDA when mamba-ssm imports; otherwise the O(1) step for a single
    cached token and the chunked scan for everything else. Shapes as in `ssd_chunked`; returns
    (y, final_state)."""
    backend = scan_backend(x.device)
    _announce(backend, x.device)
    if backend == "mamba_ssm":
        return _kernel_scan(x, dt, A, B, C, chunk_size, state)
    if state is not None and x.shape[1] == 1:
        y, new = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], state)
        return y[:, None], new
    return ssd_chunked(x, dt, A, B, C, chunk_size, state)
