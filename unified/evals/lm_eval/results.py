"""Reading lm-evaluation-harness results files of a run folder (no lm-eval import needed).

`python -m unified.evals.lm_eval` writes RUN/lm_eval/results_<date>.json by default; any
lm-eval results file under RUN/lm_eval/ (searched recursively) is read. Every numeric metric of
every task becomes `lm_eval/<task>/<metric>` (`<metric>[<filter>]` for a filter other than
"none"; standard errors are left out: compare.py's intervals are over seeds). When several files
hold a task, the newest (lm-eval's "date" field) wins. Results of another checkpoint than the
run's best_model.pt (their `train_step` differs from summary.json's best_step) get a note.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

LM_EVAL_DIR = "lm_eval"
PREFIX = "lm_eval/"


def lm_eval_files(run_dir: str | Path) -> list[Path]:
    """lm-eval results files under RUN/lm_eval/ (results*.json, recursively)."""
    root = Path(run_dir) / LM_EVAL_DIR
    return sorted(root.rglob("results*.json")) if root.is_dir() else []


def _metric_name(key: str) -> str | None:
    """"acc,none" -> "acc"; "exact_match,strict-match" -> "exact_match[strict-match]"; None for stderr."""
    metric, _, filt = key.partition(",")
    if metric.endswith("_stderr") or not filt:
        return None
    return metric if filt == "none" else f"{metric}[{filt}]"


def lm_eval_metrics(run_dir: str | Path, best_step: int | None = None,
                    notes: list[str] | None = None) -> dict[str, float]:
    """`lm_eval/<task>/<metric>` -> value from the run's lm-eval results files; unreadable files
    and results of another checkpoint than step `best_step` are reported in `notes`."""
    found: list[tuple[float, Path, dict[str, Any]]] = []
    for path in lm_eval_files(run_dir):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if notes is not None:
                notes.append(f"{path.name} (lm-eval) is unreadable ({type(exc).__name__}); ignored")
            continue
        if isinstance(data, dict) and isinstance(data.get("results"), dict):
            date = data.get("date")
            found.append((float(date) if isinstance(date, (int, float)) else path.stat().st_mtime, path, data))
    out: dict[str, float] = {}
    for _, path, data in sorted(found, key=lambda f: f[0]):  # newest last, so it wins
        step = (data.get("config") or {}).get("train_step")
        if notes is not None and best_step is not None and step is not None and step != best_step:
            notes.append(f"{path.name} (lm-eval) evaluated a checkpoint of step {step}, but the run's best_model.pt "
                         f"is from step {best_step}: stale results, re-run the lm-eval adapter")
        for task, entry in data["results"].items():
            for key, value in (entry or {}).items():
                name = _metric_name(key)
                if name and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    out[f"{PREFIX}{task}/{name}"] = float(value)
    return out
