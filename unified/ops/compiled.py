"""Per-step loops compiled once per machine into a C++ extension (`csrc/`), with the Python
loops as the fallback.

A recurrence over time runs thousands of dependent steps per sequence, each a handful of small
ATen calls; on a CPU at small widths the Python interpreter between those calls costs about as
much as the calls themselves. `unified/ops/csrc/hrnn_loops.cpp` is `hrnn_scan`'s two loops with
the same ATen calls in the same order (so the same values, tested in tests/test_compiled.py).
It is built by `torch.utils.cpp_extension.load` (needs a C++ compiler and ninja; ~15 s on 2
cores, once: the build is cached under torch's extensions folder, `TORCH_EXTENSIONS_DIR`, and
rebuilt when the source changes) the first time a scan runs on CPU, with one `note:` line on
stderr when it builds.

`UNIFIED_COMPILED_LOOPS` chooses: `auto` (default: build or load it, and fall back to the
Python loops with one warning if that fails), `0` (always the Python loops), `1` (fail with
the build's error instead of falling back).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from unified.errors import ConfigError

_SOURCES = {"unified_hrnn": Path(__file__).parent / "csrc" / "hrnn_loops.cpp"}
_CHOICES = ("auto", "0", "1")
_loaded: dict[str, Optional[Any]] = {}
_BUILD_NOTE_S = 3.0  # loading a cached build takes well under this; a build takes ~15 s


def compiled_choice() -> str:
    """The UNIFIED_COMPILED_LOOPS setting (auto / 0 / 1); anything else is a ConfigError."""
    choice = os.environ.get("UNIFIED_COMPILED_LOOPS", "auto").strip() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"UNIFIED_COMPILED_LOOPS={choice!r} is not accepted; accepted: {', '.join(_CHOICES)}")
    return choice


def compiled_ops(name: str) -> Optional[Any]:
    """The op namespace `torch.ops.<name>` of the extension `name`, building it on first use;
    None when UNIFIED_COMPILED_LOOPS=0 or (under auto) the build fails, in which case the
    caller runs its Python loop."""
    choice = compiled_choice()
    if choice == "0":
        return None
    if name not in _loaded:
        try:
            from torch.utils import cpp_extension

            start = time.perf_counter()
            cpp_extension.load(name=name, sources=[str(_SOURCES[name])], extra_cflags=["-O2"],
                               is_python_module=False, verbose=False)
            _loaded[name] = getattr(torch.ops, name)
            took = time.perf_counter() - start
            if took > _BUILD_NOTE_S:  # a build, not a load of the cached one
                print(f"note: built the compiled loops '{name}' in {took:.0f} s (cached: later runs load them)",
                      file=sys.stderr)
        except Exception as exc:  # no compiler, no ninja, a failed build: the Python loop runs
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            if choice == "1":
                raise ConfigError(f"UNIFIED_COMPILED_LOOPS=1 but the loops '{name}' did not build ({first}); "
                                  f"accepted: a working C++ compiler and ninja, or UNIFIED_COMPILED_LOOPS=auto/0") from exc
            warnings.warn(f"compiled loops '{name}' unavailable ({first}); using the Python loops "
                          f"(set UNIFIED_COMPILED_LOOPS=0 to skip the build)", RuntimeWarning, stacklevel=2)
            _loaded[name] = None
    return _loaded[name]
