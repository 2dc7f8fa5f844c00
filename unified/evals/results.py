"""Results files: `results_<suite>.json` = {"meta": {...}, "<suite>": {...}} (docs/design.md#contract-4).

The same checkpoint and seed give identical files except the fields named in `VOLATILE_KEYS`
(timestamps and wall times). Results computed with an evaluation-time option that changes the
model or the grid go to `results_<suite>@<tag>.json` (`options_tag`), never to the as-trained
file; files are written under a unique temporary name and renamed into place (atomic, and two
writers never share a temporary file)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import unified

GRID_VERSION = "2"  # 2: distinct stratified cells, strict scoring, floors, relative needle grid
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


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")
MAX_TAG = 100


def _tag_value(value: Any) -> str:
    if isinstance(value, dict):  # e.g. the OOD grid: {"parity": [16, 32]} -> parity-16-32
        return "+".join(f"{k}-{_tag_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return "-".join(_tag_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def options_tag(options: dict[str, Any]) -> str:
    """A deterministic, filesystem-safe name for non-default evaluation options, e.g.
    {"K": 8} -> "K=8", {"limit": 10, "tasks": ["parity"]} -> "limit=10,tasks=parity"; "" for
    none. Keys are sorted; characters other than letters, digits and ._+=,- become "_"; a tag
    longer than MAX_TAG characters is cut and ends in a hash of the whole tag (still unique)."""
    tag = ",".join(f"{k}={_tag_value(v)}" for k, v in sorted(options.items()))
    tag = _TAG_UNSAFE.sub("_", tag)
    if len(tag) > MAX_TAG:
        tag = tag[:MAX_TAG - 11] + "~" + hashlib.sha256(tag.encode()).hexdigest()[:10]
    return tag


def results_name(suite: str, tag: str = "") -> str:
    """`results_<suite>.json`, or `results_<suite>@<tag>.json` for non-default options."""
    return f"results_{suite}@{tag}.json" if tag else f"results_{suite}.json"


def parse_results_name(name: str) -> tuple[str, str] | None:
    """(suite, tag) of a results file name, or None when `name` is not one."""
    m = re.fullmatch(r"results_([A-Za-z0-9_]+?)(?:@(.+))?\.json", name)
    return (m.group(1), m.group(2) or "") if m else None


def write_results(out_dir: str | Path, suite: str, payload: dict[str, Any], meta: dict[str, Any],
                  tag: str = "") -> Path:
    """Write results_<suite>[@tag].json (non-finite numbers become null) and return its path.

    The text goes to a fresh temporary file in the same folder (unique name, so concurrent
    writers never collide), is flushed to disk, and is renamed over the target in one step:
    a reader sees the old file or the new one, never a mix."""
    out = Path(out_dir) / results_name(suite, tag)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable({"meta": meta, suite: payload}), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def strip_volatile(obj: Any) -> Any:
    """A copy of a results dict without timestamps and wall times (for determinism checks)."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj
