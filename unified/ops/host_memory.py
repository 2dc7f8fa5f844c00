"""Host memory for CPU tensors: keep freed blocks in the process and hand them out again.

A CPU training step allocates the same large tensors every step (activations, the saved states
of a recurrence, their gradients). glibc's malloc serves each block above its mmap threshold
(128 KiB, rising to at most 32 MiB) with fresh pages from the kernel and returns them on
free, so every step pays a page fault and a kernel zeroing for each 4 KiB it writes. With mmap
disabled for allocations and a 1 GiB trim threshold, freed blocks stay in malloc's heap and are
reused, which PyTorch's CPU performance guide gets by preloading jemalloc or tcmalloc. The
sequential variants, whose backward keeps every step's activations, gain most: bench/RESULTS.md
(`bench/recurrent_speed.py --host_memory system` against the default `reuse`).

The cost: memory a process freed is not given back to the system while it runs (its resident
size stays at its peak), which suits one long training or evaluation per process. glibc only
(Linux); elsewhere `reuse_freed_host_memory` does nothing and says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
TRIM_THRESHOLD_BYTES = 1 << 30


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (the one malloc whose mallopt we know)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def host_memory_policy(mode: str) -> str:
    """Set how freed host memory is treated for the rest of the process and return what is in
    effect: "reuse" (keep freed blocks for reuse, as the module docstring says), "system"
    (glibc's default values set explicitly: mmap for blocks above 128 KiB, 128 KiB trim
    threshold; setting them also turns off glibc's dynamic raising of the mmap threshold, so
    this is not quite an untouched process), or "system (not glibc)" where the malloc is not
    glibc's and nothing was changed."""
    if mode not in ("reuse", "system"):
        raise ValueError(f"host memory mode must be reuse or system, got {mode!r}")
    libc = _libc()
    if libc is None:
        return "system (not glibc)"
    mmap_max, trim = (0, TRIM_THRESHOLD_BYTES) if mode == "reuse" else (65536, 128 * 1024)
    ok = libc.mallopt(_M_MMAP_MAX, mmap_max) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
    if mode == "system":
        ok = ok and libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024) == 1
    return mode if ok else "system (mallopt refused)"


def reuse_freed_host_memory() -> str:
    """`host_memory_policy("reuse")`: what train.py, eval_hub.py and the benchmarks set on CPU."""
    return host_memory_policy("reuse")
