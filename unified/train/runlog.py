"""The run's `metrics.jsonl`: appended one JSON object per line, never rewritten.

Records carry a `kind` ("train", "val", "resume" ...) and a `step`. When a run resumes from a
checkpoint at step s, a {"kind": "resume", "step": s} line is appended; `read_metrics` then drops
earlier records with step > s (they were logged after the checkpoint and are replaced)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def append_metrics(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line (flushed, so a kill loses at most this line). A line torn
    by a kill is terminated first, so the record after it (e.g. the resume marker) stays readable."""
    line = json.dumps({k: _clean(v) for k, v in record.items()}) + "\n"
    with open(path, "a+b") as f:  # appends always go to the end; reads may look back
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()


def read_metrics(path: str | Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl, with resumed-over records removed; a torn last line is skipped,
    and so is any line that is not a JSON object (bytes that are not UTF-8 included); when
    `skipped` is given, one description per skipped non-empty line is appended to it."""
    p = Path(path)
    if not p.is_file():
        return []
    records: list[dict[str, Any]] = []
    for number, line in enumerate(p.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict) or (rec.get("kind") == "resume" and not isinstance(rec.get("step"), int)):
            if skipped is not None and line.strip():
                skipped.append(f"line {number} is not a metrics record (a JSON object)")
            continue
        if rec.get("kind") == "resume":
            records = [r for r in records
                       if isinstance(r.get("step", 0), (int, float)) and r.get("step", 0) <= rec["step"]]
        records.append(rec)
    return records
