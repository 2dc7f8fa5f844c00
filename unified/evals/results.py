"""Results files: `results_<suite>.json` = {"meta": {...}, "<suite>": {...}} (DESIGN contract 4).

The same checkpoint and seed give identical files except the fields named in `VOLATILE_KEYS`
(timestamps and wall times)."""
from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import torch

import unified

GRID_VERSION = "1"
VOLATILE_KEYS = ("timestamp", "wall_time_s")


def git_commit() -> str:
    """Commit of the harness code (or "unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(unified.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def base_meta(**fields: Any) -> dict[str, Any]:
    """Metadata every results file carries, plus `fields` (checkpoint, model, settings ...)."""
    return {"harness_version": unified.__version__, "git_commit": git_commit(), "grid_version": GRID_VERSION,
            "torch_version": torch.__version__, "python": platform.python_version(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n), lm-eval convention); nan when empty."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_results(out_dir: str | Path, suite: str, payload: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write results_<suite>.json (non-finite numbers become null) and return its path."""
    out = Path(out_dir) / f"results_{suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable({"meta": meta, suite: payload}), indent=2, sort_keys=False) + "\n")
    tmp.replace(out)
    return out


def strip_volatile(obj: Any) -> Any:
    """A copy of a results dict without timestamps and wall times (for determinism checks)."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj
