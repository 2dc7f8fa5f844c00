"""mamba-ssm's and causal-conv1d's real Python wrappers, loaded from their source distributions on a
machine without a GPU, with the GPU launches emulated (used by tests/test_mamba_contract.py).

What runs for real: every line of the packages' Python code between our call and the GPU launch:
argument checks and asserts, contiguity fixes, output allocation, the autograd.Function forward,
the return values, and the stride / flag arguments each launch receives. What is emulated: the
body of each Triton kernel (a `triton` stub replaces `triton.jit` functions by a dispatcher to a
reference written here from the kernel's addressing) and causal-conv1d's C++ entry points (their
TORCH_CHECKs on dtype / shape / layout are reproduced). The references read and write every tensor
argument through `as_strided` with the strides the wrapper passed, so a call whose strides do not
describe its tensors (a tied stride-0 view the kernel does not expect, a transposed layout ...)
computes a wrong result, and the test comparing against the PyTorch path fails.

Sources: `<dir>/mamba_ssm-2.3.2.post1/` and `<dir>/causal_conv1d-1.7.0/` (unpacked sdists), with
<dir> = $UNIFIED_KERNEL_SOURCES or `.cache/` in the repository (gitignored); `bash
.ci/fetch_kernel_sources.sh` downloads and unpacks them (pip, no build). Nothing is vendored.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import math
import os
import sys
import types
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
MAMBA_SDIST = "mamba_ssm-2.3.2.post1"
CONV_SDIST = "causal_conv1d-1.7.0"
LAUNCHES: Counter = Counter()  # emulated launches by kernel name (tests reset and read it)
LAST: dict[str, dict[str, Any]] = {}  # the bound arguments of each kernel's latest launch


def sources_dir() -> Path:
    """Where the unpacked sdists live: $UNIFIED_KERNEL_SOURCES or <repo>/.cache."""
    return Path(os.environ.get("UNIFIED_KERNEL_SOURCES", ROOT / ".cache"))


def missing_sources() -> str | None:
    """None when both sdists are unpacked, else a line saying what is missing and how to fetch it."""
    d = sources_dir()
    for name, probe in ((MAMBA_SDIST, "mamba_ssm/ops/triton/ssd_combined.py"),
                        (CONV_SDIST, "causal_conv1d/causal_conv1d_interface.py")):
        if not (d / name / probe).is_file():
            return f"{d / name} is absent: run `bash .ci/fetch_kernel_sources.sh` (or set UNIFIED_KERNEL_SOURCES)"
    try:
        import einops  # noqa: F401  (mamba-ssm's wrappers import it)
    except ImportError:
        return "einops is not installed (pip install -r requirements.txt)"
    return None


# ---- the triton stub -----------------------------------------------------------------------------
class _Kernel:
    """A `triton.jit` function: `kernel[grid](*args, **meta)` binds the arguments to the kernel's
    own parameter names, applies its `triton.heuristics`, and runs the reference of that name."""

    def __init__(self, fn: Callable):
        self.fn, self.name, self.rules = fn, fn.__name__, {}
        self.signature = inspect.signature(fn)

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return self._launch

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # a jit helper called from a kernel
        raise RuntimeError(f"{self.name} is device code: only its launch is emulated")

    def _launch(self, *args: Any, **kwargs: Any) -> None:
        meta = {k: v for k, v in kwargs.items() if k not in ("num_warps", "num_stages", "num_ctas")}
        a = dict(self.signature.bind_partial(*args, **meta).arguments)
        for name, rule in self.rules.items():
            a[name] = rule(a)
        if self.name not in REFERENCES:
            raise NotImplementedError(f"no reference for kernel {self.name}: the call reached an unemulated launch")
        LAUNCHES[self.name] += 1
        LAST[self.name] = a
        REFERENCES[self.name](a)


def _jit(fn: Callable | None = None, **_: Any) -> Any:
    return _Kernel(fn) if fn is not None else _Kernel


def _heuristics(rules: dict[str, Callable]) -> Callable[[_Kernel], _Kernel]:
    def wrap(kernel: _Kernel) -> _Kernel:
        kernel.rules = {**rules, **kernel.rules}
        return kernel
    return wrap


def _autotune(configs: list | None = None, key: list | None = None, **_: Any) -> Callable[[_Kernel], _Kernel]:
    """Autotuning is a launch-speed choice: the configs are kept (the wrappers read them), never used."""
    def wrap(kernel: _Kernel) -> _Kernel:
        kernel.configs = list(configs or [])
        return kernel
    return wrap


class _Language(types.ModuleType):
    """triton.language: names used at import time (constexpr annotations, dtypes) as sentinels."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return SimpleNamespace(name=f"tl.{name}")


def _triton_modules() -> dict[str, types.ModuleType]:
    tl = _Language("triton.language")
    triton = types.ModuleType("triton")
    triton.__version__ = "3.1.0"
    triton.language = tl
    triton.jit = _jit
    triton.heuristics = _heuristics
    triton.autotune = _autotune
    triton.Config = lambda kwargs=None, **kw: SimpleNamespace(kwargs=kwargs or {}, **kw)
    triton.cdiv = lambda a, b: -(-a // b)
    triton.next_power_of_2 = lambda n: 1 << max(0, int(n) - 1).bit_length()
    return {"triton": triton, "triton.language": tl}


# ---- loading ---------------------------------------------------------------------------------------
_ROOTS = ("triton", "mamba_ssm", "causal_conv1d", "causal_conv1d_cuda")


def _package(name: str, path: Path) -> types.ModuleType:
    """A package object whose submodules import from `path` without running its __init__.py
    (mamba_ssm's imports the compiled CUDA extension)."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    return mod


@functools.lru_cache(maxsize=1)
def load() -> SimpleNamespace:
    """Import the wrappers once per process (causal-conv1d registers torch custom ops, which can
    happen only once). The stubs are in sys.modules only while importing: afterwards `triton`,
    `mamba_ssm` and `causal_conv1d` are removed again, so nothing else in the process (torch's
    own Triton detection included) ever sees them."""
    d = sources_dir()
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in _ROOTS}
    mamba = d / MAMBA_SDIST / "mamba_ssm"
    try:
        sys.modules.update(_triton_modules())
        for name, path in (("mamba_ssm", mamba), ("mamba_ssm.ops", mamba / "ops"),
                           ("mamba_ssm.ops.triton", mamba / "ops" / "triton"), ("mamba_ssm.utils", mamba / "utils")):
            sys.modules[name] = _package(name, path)
        cuda_ext = types.ModuleType("causal_conv1d_cuda")
        cuda_ext.causal_conv1d_fwd, cuda_ext.causal_conv1d_update = _conv_fwd, _conv_update
        sys.modules["causal_conv1d_cuda"] = cuda_ext
        sys.path.insert(0, str(d / CONV_SDIST))
        ssd = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
        ssu = importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
        conv = importlib.import_module("causal_conv1d")
    finally:
        if str(d / CONV_SDIST) in sys.path:
            sys.path.remove(str(d / CONV_SDIST))
        for k in [k for k in sys.modules if k.split(".")[0] in _ROOTS]:
            del sys.modules[k]
        sys.modules.update(saved)
    return SimpleNamespace(chunk_scan=ssd.mamba_chunk_scan_combined, state_update=ssu.selective_state_update,
                           conv=conv.causal_conv1d_fn, conv_update=conv.causal_conv1d_update,
                           version=(MAMBA_SDIST, CONV_SDIST))


@contextlib.contextmanager
def installed_without_cuda_extension():
    """The state after `MAMBA_SKIP_CUDA_BUILD=TRUE pip install mamba-ssm`: the package importable
    (from the sdist folder), `triton` importable (the stub), no compiled CUDA extension. sys.path
    and sys.modules are restored afterwards."""
    d = sources_dir() / MAMBA_SDIST
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in _ROOTS}
    try:
        for k in list(saved):
            del sys.modules[k]
        sys.modules.update(_triton_modules())
        sys.path.insert(0, str(d))
        yield
    finally:
        if str(d) in sys.path:
            sys.path.remove(str(d))
        for k in [k for k in sys.modules if k.split(".")[0] in _ROOTS]:
            del sys.modules[k]
        sys.modules.update(saved)


# ---- Triton kernel references ------------------------------------------------------------------------
def _v(t: torch.Tensor, size: tuple[int, ...], strides: tuple[int, ...]) -> torch.Tensor:
    """The tensor a kernel addresses at t's data pointer with these sizes and element strides."""
    return t.as_strided(size, strides, t.storage_offset())


def _s(a: dict[str, Any], *names: str) -> tuple[int, ...]:
    return tuple(int(a[n]) for n in names)


def _chunks(seqlen: int, chunk: int) -> int:
    return math.ceil(seqlen / chunk)


def _ref_chunk_cumsum(a: dict[str, Any]) -> None:
    """dt (b, T, H) [+ dt_bias, softplus, clamp], zero past T; dt_out and dA_cumsum (b, c, H, L)."""
    b, T, H, L = _s(a, "batch", "seqlen", "nheads", "chunk_size")
    nc = _chunks(T, L)
    dt = _v(a["dt_ptr"], (b, T, H), _s(a, "stride_dt_batch", "stride_dt_seqlen", "stride_dt_head")).float()
    if a["HAS_DT_BIAS"]:
        dt = dt + _v(a["dt_bias_ptr"], (H,), _s(a, "stride_dt_bias_head")).float()
    if a["DT_SOFTPLUS"]:
        dt = torch.where(dt <= 20.0, F.softplus(dt), dt)
    dt = dt.clamp(float(a["dt_min"]), float(a["dt_max"]))
    dt = F.pad(dt, (0, 0, 0, nc * L - T)).reshape(b, nc, L, H).transpose(2, 3)  # (b, c, H, L)
    A = _v(a["A_ptr"], (H,), _s(a, "stride_A_head")).float()
    shape = (b, nc, H, L)
    _v(a["dt_out_ptr"], shape, _s(a, *(f"stride_dt_out_{k}" for k in ("batch", "chunk", "head", "csize")))).copy_(dt)
    _v(a["dA_cumsum_ptr"], shape, _s(a, *(f"stride_dA_cs_{k}" for k in ("batch", "chunk", "head", "csize")))).copy_(
        torch.cumsum(dt * A[:, None], dim=-1))


def _per_chunk(a: dict[str, Any], key: str, b: int, nc: int, H: int, L: int) -> torch.Tensor:
    """dt or dA_cumsum (b, c, H, L) as a kernel reads it (stride names stride_<key>_...)."""
    return _v(a[f"{'dA_cumsum' if key == 'dA_cs' else key}_ptr"], (b, nc, H, L),
              _s(a, *(f"stride_{key}_{k}" for k in ("batch", "chunk", "head", "csize")))).float()


def _seq(t: torch.Tensor, T: int, L: int) -> torch.Tensor:
    """(b, T, ...) -> (b, c, L, ...), zero-padded past T."""
    pad = [0, 0] * (t.dim() - 2) + [0, _chunks(T, L) * L - T]
    return F.pad(t, pad).reshape(t.shape[0], -1, L, *t.shape[2:])


def _ref_chunk_state(a: dict[str, Any]) -> None:
    """states[b, c, h] = sum_l x_l (B_l exp(min(cs_last - cs_l, 0)) dt_l)^T within each chunk."""
    P, N, L, b, T, ratio = _s(a, "hdim", "dstate", "chunk_size", "batch", "seqlen", "nheads_ngroups_ratio")
    st = a["states_ptr"]
    nc, H = st.shape[1], st.shape[2]
    assert not a["HAS_SEQ_IDX"]
    x = _v(a["x_ptr"], (b, T, H, P), _s(a, "stride_x_batch", "stride_x_seqlen", "stride_x_head", "stride_x_hdim"))
    B = _v(a["b_ptr"], (b, T, H // ratio, N), _s(a, "stride_b_batch", "stride_b_seqlen", "stride_b_head", "stride_b_dstate"))
    dt, cs = _per_chunk(a, "dt", b, nc, H, L), _per_chunk(a, "dA_cs", b, nc, H, L)
    scale = torch.exp(torch.clamp(cs[..., -1:] - cs, max=0.0)) * dt  # (b, c, H, L)
    Bh = _seq(B.float(), T, L).repeat_interleave(ratio, dim=3)  # (b, c, L, H, N)
    xs = _seq(x.float(), T, L)  # (b, c, L, H, P)
    out = torch.einsum("bclhp,bclhn,bchl->bchpn", xs, Bh, scale)
    _v(st, (b, nc, H, P, N), _s(a, *(f"stride_states_{k}" for k in ("batch", "chunk", "head", "hdim", "dstate")))).copy_(out)


def _ref_state_passing(a: dict[str, Any]) -> None:
    """out[c] = state entering chunk c (initial or 0 first), final = state after the last chunk."""
    dim, nc = _s(a, "dim", "nchunks")
    st = a["states_ptr"]
    b, H = st.shape[0], st.shape[2]
    assert not a["HAS_SEQ_IDX"]
    chunk_states = _v(st, (b, nc, H, dim), _s(a, *(f"stride_states_{k}" for k in ("batch", "chunk", "head", "dim")))).float()
    dA = _v(a["dA_cs_ptr"], (b, nc, H), _s(a, "stride_dA_cs_batch", "stride_dA_cs_chunk", "stride_dA_cs_head")).float()
    if a["HAS_INITSTATES"]:
        h = _v(a["initstates_ptr"], (b, H, dim), _s(a, *(f"stride_initstates_{k}" for k in ("batch", "head", "dim")))).float()
    else:
        h = torch.zeros(b, H, dim)
    out = _v(a["out_ptr"], (b, nc, H, dim), _s(a, *(f"stride_out_{k}" for k in ("batch", "chunk", "head", "dim"))))
    for c in range(nc):
        out[:, c] = h
        h = torch.exp(dA[:, c])[..., None] * h + chunk_states[:, c]
    _v(a["final_states_ptr"], (b, H, dim), _s(a, *(f"stride_final_states_{k}" for k in ("batch", "head", "dim")))).copy_(h)


def _ref_bmm_chunk(a: dict[str, Any]) -> None:
    """out[b, c, g, i, j] = a_i . b_j within each chunk (zero past seqlen)."""
    T, L, K, G = _s(a, "seqlen", "chunk_size", "K", "ngroups")
    out = a["out_ptr"]
    b, nc = out.shape[0], out.shape[1]
    assert not a["HAS_SEQ_IDX"]
    x = _v(a["a_ptr"], (b, T, G, K), _s(a, "stride_a_batch", "stride_a_seqlen", "stride_a_head", "stride_ak"))
    y = _v(a["b_ptr"], (b, T, G, K), _s(a, "stride_b_batch", "stride_b_seqlen", "stride_b_head", "stride_bk"))
    cb = torch.einsum("bcigk,bcjgk->bcgij", _seq(x.float(), T, L), _seq(y.float(), T, L))
    _v(out, (b, nc, G, L, L), _s(a, "stride_out_batch", "stride_out_chunk", "stride_out_head", "stride_outm", "stride_outn")).copy_(cb)


def _ref_chunk_scan(a: dict[str, Any]) -> None:
    """out_t = sum_{s<=t} CB_ts exp(min(cs_t - cs_s, 0)) dt_s x_s + exp(cs_t) C_t . prev_state [+ D x] [* silu(z)]."""
    L, P, N, b, T, ratio = _s(a, "chunk_size", "hdim", "dstate", "batch", "seqlen", "nheads_ngroups_ratio")
    st = a["prev_states_ptr"]
    nc, H = st.shape[1], st.shape[2]
    G = H // ratio
    assert a["IS_CAUSAL"] and not a["HAS_SEQ_IDX"]
    cb = _v(a["cb_ptr"], (b, nc, G, L, L), _s(a, *(f"stride_cb_{k}" for k in ("batch", "chunk", "head", "csize_m", "csize_k")))).float()
    x = _v(a["x_ptr"], (b, T, H, P), _s(a, *(f"stride_x_{k}" for k in ("batch", "seqlen", "head", "hdim")))).float()
    C = _v(a["C_ptr"], (b, T, G, N), _s(a, *(f"stride_C_{k}" for k in ("batch", "seqlen", "head", "dstate")))).float()
    prev = _v(st, (b, nc, H, P, N), _s(a, *(f"stride_states_{k}" for k in ("batch", "chunk", "head", "hdim", "dstate")))).float()
    dt, cs = _per_chunk(a, "dt", b, nc, H, L), _per_chunk(a, "dA_cs", b, nc, H, L)
    decay = torch.exp(torch.clamp(cs[..., :, None] - cs[..., None, :], max=0.0))  # (b, c, H, L, L)
    w = cb.repeat_interleave(ratio, dim=2) * decay * dt[..., None, :]
    w = w.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), 0.0)
    xs = _seq(x, T, L)  # (b, c, L, H, P)
    y = torch.einsum("bchts,bcshp->bcthp", w, xs)
    Ch = _seq(C, T, L).repeat_interleave(ratio, dim=3)  # (b, c, L, H, N)
    y = y + torch.einsum("bcthn,bchpn->bcthp", Ch, prev) * torch.exp(cs).permute(0, 1, 3, 2)[..., None]
    if a["HAS_D"]:
        D = a["D_ptr"]
        if a["D_HAS_HDIM"]:
            Dv = _v(D, (H, P), (int(a["stride_D_head"]), 1)).float()
        else:
            Dv = _v(D, (H,), _s(a, "stride_D_head")).float()[:, None]
        y = y + xs * Dv
    y = y.reshape(b, nc * L, H, P)[:, :T]
    assert not a["HAS_Z"], "z is not used by the project's calls"
    _v(a["out_ptr"], (b, T, H, P), _s(a, *(f"stride_out_{k}" for k in ("batch", "seqlen", "head", "hdim")))).copy_(y)


def _ref_state_update(a: dict[str, Any]) -> None:
    """One recurrent step in place on the state; tied (TIE_HDIM) reads one dt / dt_bias / A per head."""
    b, H, P, N, ratio = _s(a, "batch", "nheads", "dim", "dstate", "nheads_ngroups_ratio")
    assert not a["HAS_STATE_BATCH_INDICES"] and not a["HAS_Z"]
    state = _v(a["state_ptr"], (b, H, P, N), _s(a, *(f"stride_state_{k}" for k in ("batch", "head", "dim", "dstate"))))
    x = _v(a["x_ptr"], (b, H, P), _s(a, "stride_x_batch", "stride_x_head", "stride_x_dim")).float()
    if a["TIE_HDIM"]:  # the kernel reads element 0 of each head's row
        dt = _v(a["dt_ptr"], (b, H), _s(a, "stride_dt_batch", "stride_dt_head")).float()[..., None]
        bias = _v(a["dt_bias_ptr"], (H,), _s(a, "stride_dt_bias_head")).float()[:, None] if a["HAS_DT_BIAS"] else 0.0
        A = _v(a["A_ptr"], (H,), _s(a, "stride_A_head")).float()[:, None, None]
    else:
        dt = _v(a["dt_ptr"], (b, H, P), _s(a, "stride_dt_batch", "stride_dt_head", "stride_dt_dim")).float()
        bias = (_v(a["dt_bias_ptr"], (H, P), _s(a, "stride_dt_bias_head", "stride_dt_bias_dim")).float()
                if a["HAS_DT_BIAS"] else 0.0)
        A = _v(a["A_ptr"], (H, P, N), _s(a, "stride_A_head", "stride_A_dim", "stride_A_dstate")).float()
    dt = dt + bias
    if a["DT_SOFTPLUS"]:
        dt = torch.where(dt <= 20.0, F.softplus(dt), dt)
    B = _v(a["B_ptr"], (b, H // ratio, N), _s(a, "stride_B_batch", "stride_B_group", "stride_B_dstate")).float()
    C = _v(a["C_ptr"], (b, H // ratio, N), _s(a, "stride_C_batch", "stride_C_group", "stride_C_dstate")).float()
    B, C = B.repeat_interleave(ratio, dim=1), C.repeat_interleave(ratio, dim=1)
    dt = dt.expand(b, H, P)
    new = state.float() * torch.exp(A * dt[..., None]) + (dt[..., None] * B[:, :, None, :]) * x[..., None]
    state.copy_(new)
    out = (new * C[:, :, None, :]).sum(-1)
    if a["HAS_D"]:
        out = out + x * _v(a["D_ptr"], (H, P), _s(a, "stride_D_head", "stride_D_dim")).float()
    _v(a["out_ptr"], (b, H, P), _s(a, "stride_out_batch", "stride_out_head", "stride_out_dim")).copy_(out)


REFERENCES: dict[str, Callable[[dict[str, Any]], None]] = {
    "_chunk_cumsum_fwd_kernel": _ref_chunk_cumsum, "_chunk_state_fwd_kernel": _ref_chunk_state,
    "_state_passing_fwd_kernel": _ref_state_passing, "_bmm_chunk_fwd_kernel": _ref_bmm_chunk,
    "_chunk_scan_fwd_kernel": _ref_chunk_scan, "_selective_scan_update_kernel": _ref_state_update,
}


# ---- causal-conv1d's C++ entry points ------------------------------------------------------------------
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _check(ok: bool, msg: str) -> None:
    """TORCH_CHECK (the C++ raises RuntimeError)."""
    if not ok:
        raise RuntimeError(msg)


def _conv_fwd(x, weight, bias, seq_idx, initial_states, out, final_states, silu) -> None:
    """causal_conv1d_fwd: the layout / dtype / shape checks of csrc/causal_conv1d.cpp, then the conv."""
    LAUNCHES["causal_conv1d_fwd"] += 1
    b, C, T = x.shape
    width = weight.shape[-1]
    _check(x.dtype in _FLOATS and weight.dtype in _FLOATS, "input/weight dtype")
    _check(tuple(weight.shape) == (C, width), "weight must have shape (dim, width)")
    _check(x.stride(2) == 1 or x.stride(1) == 1, "x must be contiguous in the channel or the time dim")
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    if channel_last:
        _check(C % 8 == 0, "causal_conv1d only supports channel dimension divisible by 8 for now")
        _check(x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0, "channel last layout requires strides multiple of 8")
    _check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    if bias is not None:
        _check(bias.dtype == weight.dtype and bias.stride(-1) == 1 and tuple(bias.shape) == (C,), "bias")
    _check(seq_idx is None, "seq_idx is not used by the project's calls")
    for name, st in (("initial_states", initial_states), ("final_states", final_states)):
        if st is not None:
            _check(channel_last, f"{name} is only supported for channel last layout")
            _check(st.dtype == x.dtype, f"{name} must have x's dtype")
            _check(tuple(st.shape) == (b, C, width - 1) and st.stride(1) == 1, f"{name} shape / layout")
    past = torch.zeros(b, C, width - 1) if initial_states is None else initial_states.float()
    seq = torch.cat([past, x.float()], dim=-1)
    y = F.conv1d(seq, weight.float()[:, None], None if bias is None else bias.float(), groups=C)
    out.copy_(F.silu(y) if silu else y)
    if final_states is not None:
        final_states.copy_(seq[..., seq.shape[-1] - (width - 1):])


def _conv_update(x, conv_state, weight, bias, out, silu, cache_seqlens, conv_state_indices) -> None:
    """causal_conv1d_update: checks of csrc/causal_conv1d.cpp, then shift the state and convolve."""
    LAUNCHES["causal_conv1d_update"] += 1
    b, C, T = x.shape
    width = weight.shape[-1]
    _check(conv_state.dtype == x.dtype, "conv_state must have x's dtype")
    _check(cache_seqlens is None and conv_state_indices is None, "not used by the project's calls")
    _check(conv_state.shape[0] == b and conv_state.shape[1] == C and conv_state.shape[2] >= width - 1, "conv_state shape")
    _check(tuple(weight.shape) == (C, width) and 2 <= width <= 4, "weight shape / width")
    if bias is not None:
        _check(bias.dtype == weight.dtype and bias.stride(-1) == 1 and tuple(bias.shape) == (C,), "bias")
    seq = torch.cat([conv_state.float(), x.float()], dim=-1)
    y = F.conv1d(seq[..., seq.shape[-1] - (width - 1 + T):], weight.float()[:, None],
                 None if bias is None else bias.float(), groups=C)
    out.copy_(F.silu(y) if silu else y)
    conv_state.copy_(seq[..., seq.shape[-1] - conv_state.shape[2]:])
