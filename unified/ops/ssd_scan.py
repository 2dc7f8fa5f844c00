"""The state-space-duality (SSD) scan of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs",
arXiv:2405.21060), written from the paper's equations, plus the dispatch to the optional fused
CUDA kernels of the Mamba-2 mixer: mamba-ssm's Triton SSD kernels (scan and decoding step) and
causal-conv1d's depthwise causal convolution (`causal_conv_silu`).

Per head h (scalar decay A_h < 0, state H_t of shape (P, N), one group of B/C shared by heads):
    H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T        y_t = H_t C_t      (D x_t is added by the caller)
The chunked form splits time into chunks of length L. With cs_t the cumulative log decay
sum_{s<=t} dt_s A_h inside a chunk:
    intra-chunk  y_t += sum_{s<=t} exp(cs_t - cs_s) (C_t . B_s) dt_s x_s      (masked L x L form)
    chunk state  S_c  = sum_s exp(cs_L - cs_s) dt_s x_s B_s^T
    across       H_c  = exp(cs_L) H_{c-1} + S_c                             (T/L-step recurrence)
    inter-chunk  y_t += exp(cs_t) H_{c-1} C_t
Nothing of shape (batch, T, heads*P, N) is ever built: the largest tensors are the (L x L) decay
masks per chunk and head, and one state per chunk. The PyTorch scan runs in float32 (float64 for
float64 inputs) with autocast disabled (`unified.ops.precision.float32_scan`). The reference it is
tested against is `unified.ops.ssd_naive`, the recurrence one step at a time.

Kernel dispatch: `fused_kernels(device)` is the single place that selects kernel functions (none
off CUDA; CPU never imports them). The calls follow mamba-ssm 2.x / causal-conv1d 1.x wrappers'
contracts, which tests/test_mamba_contract.py checks on CPU by running those packages' real Python
wrappers (from their source distributions) with the GPU launches emulated.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from unified.ops.precision import float32_scan, scan_dtype

log = logging.getLogger("unified")
_LOGGED: set[str] = set()  # backends already announced in the log (one line each per process)


def pad_to_chunks(tensors: tuple[torch.Tensor, ...], chunk_size: int, values: tuple[float, ...] | None = None
                  ) -> tuple[int, int, list[torch.Tensor]]:
    """Pad the time axis (dim 1) of every tensor (b, T, ...) at the end up to a multiple of the
    chunk length L = min(chunk_size, T) (at least 1), with the tensor's entry of `values` (default
    0): the chunked scans pad dt = 0 (and a signed decay a = 1), positions that leave the state
    unchanged. Returns (L, number of chunks, padded tensors)."""
    T = tensors[0].shape[1]
    L = max(1, min(int(chunk_size), T))
    pad = (-T) % L
    values = values or (0.0,) * len(tensors)
    padded = [F.pad(v, (0, 0) * (v.dim() - 2) + (0, pad), value=fill) if pad else v for v, fill in zip(tensors, values)]
    return L, (T + pad) // L, padded


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int, initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan for training and prefill.

    x (b, T, H, P), dt (b, T, H) (positive, after softplus), A (H,) (negative), B and C (b, T, N),
    initial_state (b, H, P, N) or None (zeros). Returns y (b, T, H, P) without the D skip term, in
    x's dtype, and the final state (b, H, P, N) in at least float32 (half-precision inputs are
    computed in float32, with autocast disabled). Any T works: the last chunk is padded with dt = 0, which leaves the
    state untouched (decay exp(0) = 1, input 0)."""
    with float32_scan(x):
        return _ssd_chunked(x, dt, A, B, C, chunk_size, initial_state)


def _ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 chunk_size: int, initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`ssd_chunked`'s body (called with autocast disabled)."""
    dtype, work = x.dtype, scan_dtype(x)
    x, dt, A, B, C = (t.to(work) for t in (x, dt, A, B, C))
    b, T, H, P = x.shape
    N = B.shape[-1]
    L, nc, (x, dt, B, C) = pad_to_chunks((x, dt, B, C), chunk_size)
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
    dtype (no D term) and the new state in at least float32 (autocast disabled)."""
    dtype, work = x.dtype, scan_dtype(x)
    with float32_scan(x):
        x, dt, A, B, C, state = (t.to(work) for t in (x, dt, A, B, C, state))
        decay = torch.exp(dt * A)[..., None, None]
        state = decay * state + (x * dt[..., None])[..., None] * B[:, None, None, :]
        y = (state @ C[:, None, :, None]).squeeze(-1)
    return y.to(dtype), state


# ---- fused kernels -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusedKernels:
    """The optional fused CUDA kernels (None = not available, the PyTorch path runs):
    chunk_scan = mamba_ssm's `mamba_chunk_scan_combined`, state_update = its
    `selective_state_update` (both Triton), conv / conv_update = causal_conv1d's
    `causal_conv1d_fn` / `causal_conv1d_update`."""

    chunk_scan: Callable | None = None
    state_update: Callable | None = None
    conv: Callable | None = None
    conv_update: Callable | None = None


NO_KERNELS = FusedKernels()


def _try_import(what: str, load: Callable[[], tuple]) -> tuple:
    """`load()`, or a tuple of Nones (logged once) when the package is absent or does not import
    (no GPU build, missing Triton ...: a broken CUDA install can raise anything)."""
    try:
        return load()
    except Exception as exc:  # noqa: BLE001  (see docstring)
        log.info("%s kernels unavailable (%s: %s); using the PyTorch path", what, type(exc).__name__, exc)
        return None, None


def _load_mamba() -> tuple:
    """mamba-ssm's Mamba-2 Triton kernels. A full install imports normally. An install without its
    CUDA extension (`MAMBA_SKIP_CUDA_BUILD=TRUE`, docs/gpu.md) fails in mamba_ssm/__init__.py,
    which imports the Mamba-1 extension `selective_scan_cuda` that the Mamba-2 Triton kernels
    never use; then the package is registered without running that __init__ and the Triton
    modules import from the installed folder."""
    try:
        import mamba_ssm  # noqa: F401
    except ImportError as exc:
        if "selective_scan_cuda" not in str(exc):
            raise
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            raise
        sys.modules["mamba_ssm"] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
        log.info("mamba_ssm: no CUDA extension (Mamba-1 scan); importing its Mamba-2 Triton kernels alone")
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    return mamba_chunk_scan_combined, selective_state_update


def _load_causal_conv1d() -> tuple:
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
    return causal_conv1d_fn, causal_conv1d_update


@functools.lru_cache(maxsize=1)
def _import_kernels() -> FusedKernels:
    """Import mamba-ssm's and causal-conv1d's kernels once per process (each may be missing)."""
    scan, step = _try_import("mamba_ssm", _load_mamba)
    conv, conv_update = _try_import("causal_conv1d", _load_causal_conv1d)
    return FusedKernels(scan, step, conv, conv_update)


def fused_kernels(device: torch.device | str) -> FusedKernels:
    """The fused kernels that run for tensors on `device`: none off CUDA (CPU runs never import
    the packages), otherwise whichever of mamba-ssm / causal-conv1d imports. Every kernel call
    goes through this function: it is the seam the contract test replaces to run the packages'
    real wrappers on CPU."""
    if torch.device(device).type != "cuda":
        return NO_KERNELS
    return _import_kernels()


def scan_backend(device: torch.device | str) -> str:
    """Which SSD implementation runs for tensors on `device`: "mamba_ssm" (fused kernels, CUDA
    with mamba-ssm installed) or "torch-chunked" (this file). Recorded in results metadata."""
    return "mamba_ssm" if fused_kernels(device).chunk_scan is not None else "torch-chunked"


def conv_kernel_fits(channels: int, width: int) -> bool:
    """Whether causal-conv1d can run this conv with states: width 2..4, and the channel-last
    layout that initial/final states need requires channels (and so strides) divisible by 8."""
    return 2 <= width <= 4 and channels % 8 == 0


def conv_backend(device: torch.device | str, channels: int = 8, width: int = 4) -> str:
    """Which causal conv runs for tensors on `device` with `channels` x `width`: "causal_conv1d"
    (CUDA, installed, shape supported) or "torch"."""
    ok = fused_kernels(device).conv is not None and conv_kernel_fits(channels, width)
    return "causal_conv1d" if ok else "torch"


def _announce(what: str, backend: str, device: torch.device) -> None:
    """Log once per process which backend runs `what`."""
    key = f"{what}:{backend}"
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("%s backend: %s (device %s)", what, backend, device)


def _kernel_step(k: FusedKernels, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step through `selective_state_update` (mamba-ssm 2.x). The wrapper needs
    tensors for dt_bias and D (it reads their strides, and `D=None` hits an upstream bug, PR #796):
    both are explicit zeros (dt is already softplus-ed, D is added by the caller). A, dt and
    dt_bias are tied over headdim with stride 0, which selects the kernel's one-value-per-head
    path. The state is copied to float32 first: the kernel updates it in place."""
    b, _, H, P = x.shape
    N = B.shape[-1]
    A = A.float()
    new = state.float().clone()
    zeros = A.new_zeros(H)[:, None].expand(H, P)
    y = k.state_update(new, x[:, 0], dt[:, 0, :, None].expand(b, H, P), A[:, None, None].expand(H, P, N),
                       B[:, 0, None, :], C[:, 0, None, :], D=zeros, dt_bias=zeros, dt_softplus=False)
    return y[:, None], new


def _kernel_scan(k: FusedKernels, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, chunk_size: int, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training / prefill through `mamba_chunk_scan_combined`: dt already positive (no bias, no
    softplus inside), no D or gate (the caller applies them), B/C one group (b, T, 1, N), the
    initial state in float32. Returns y in x's dtype and the float32 final state."""
    init = None if state is None else state.float()
    y, final = k.chunk_scan(x, dt, A.float(), B[:, :, None, :], C[:, :, None, :], chunk_size,
                            initial_states=init, return_final_states=True)
    return y, final


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             chunk_size: int, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch: fused kernels on CUDA when mamba-ssm imports; otherwise the O(1) step for a single
    cached token and the chunked scan for everything else. Shapes as in `ssd_chunked`; returns
    (y, final_state), the state in float32 on every path."""
    k = fused_kernels(x.device)
    backend = "mamba_ssm" if k.chunk_scan is not None else "torch-chunked"
    _announce("SSD scan", backend, x.device)
    step = state is not None and x.shape[1] == 1
    if backend == "mamba_ssm":
        return _kernel_step(k, x, dt, A, B, C, state) if step else _kernel_scan(k, x, dt, A, B, C, chunk_size, state)
    if step:
        y, new = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], state)
        return y[:, None], new
    return ssd_chunked(x, dt, A, B, C, chunk_size, state)


def causal_conv_silu(xbc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """silu(causal depthwise conv) of xbc (b, T, C) continuing from `past`, the last (k - 1)
    inputs before it (b, C, k - 1; None = zeros), with weight (C, 1, k) and bias (C,). Returns
    (output (b, T, C), the last k - 1 inputs (b, C, k - 1)). causal-conv1d on CUDA when installed
    and the shape fits (`conv_kernel_fits`), PyTorch otherwise; both compute the same function."""
    b, T, Cdim = xbc.shape
    width = weight.shape[-1]
    k = fused_kernels(xbc.device)
    if k.conv is not None and conv_kernel_fits(Cdim, width):
        _announce("causal conv", "causal_conv1d", xbc.device)
        return _kernel_conv(k, xbc, weight[:, 0], bias, past)
    _announce("causal conv", "torch", xbc.device)
    past = xbc.new_zeros(b, Cdim, width - 1) if past is None else past
    seq = torch.cat([past, xbc.transpose(1, 2)], dim=-1)  # (b, C, k-1+T)
    new_past = seq[..., seq.shape[-1] - (width - 1):]
    if T == 1:  # decoding step: k products per channel, much cheaper than a conv1d call
        return F.silu((seq * weight[:, 0]).sum(-1) + bias)[:, None], new_past
    return F.silu(F.conv1d(seq, weight, bias, groups=Cdim)).transpose(1, 2), new_past


def _kernel_conv(k: FusedKernels, xbc: torch.Tensor, w: torch.Tensor, bias: torch.Tensor,
                 past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`causal_conv_silu` through causal-conv1d, w (C, k). One cached token: `causal_conv1d_update`
    on a copy of the state in x's dtype (it updates in place and requires that dtype). Otherwise
    `causal_conv1d_fn` on the channel-last layout (x (b, C, T) with stride(1) = 1, initial states
    likewise), the only layout for which it takes and returns states."""
    if past is not None and xbc.shape[1] == 1:
        state = past.to(xbc.dtype, copy=True)
        y = k.conv_update(xbc[:, 0], state, w, bias, activation="silu")
        return y[:, None], state
    x = xbc.contiguous().transpose(1, 2)
    init = None if past is None else past.to(x.dtype).transpose(1, 2).contiguous().transpose(1, 2)
    y, state = k.conv(x, w, bias, initial_states=init, return_final_states=True, activation="silu")
    return y.transpose(1, 2), state
