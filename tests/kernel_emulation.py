"""mamba-ssm's and causal-conv1d's real Python wrappers, loaded from their source distributions on a
machine without a GPU, with the GPU launches emulated (used by tests/test_mamba_contract.py).

What runs for real: every line of the packages' Python code between our call and the GPU launch:
argument checks and asserts, contiguity fixes, output allocation, the autograd.Function forward,
the return values, and the stride / flag arguments each launch receives. What is emulated: the
body of each Triton kernel (a `triton` stub replaces `triton.jit` functions by a dispatcher to a
reference in tests/triton_references.py, written from the kernel's addressing) and causal-conv1d's C++ entry points (their
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
import os
import sys
import types
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from triton_references import REFERENCES

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
