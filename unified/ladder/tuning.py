"""Fair tuning: each ladder row at its own best learning rate (the MAD and zoology protocol).

`ladder.py --lr_grid 3e-4,1e-3,3e-3` (or a preset's `lr_grid`) trains every (row, seed) at every
rate into `<row>/lr<rate>/seed<k>/`, then picks one rate per row from the held-out *validation*
split only, before anything is evaluated on the eval grid: `val_loss` = the run's best validation
loss (the number that selects best_model.pt; lower wins), or `val_exact_match` = exact match on
the held-out val prompts at that best step (higher wins). The score of a rate is its mean over the
row's seeds; a rate where any seed has no score (diverged, crashed, unfinished) is never chosen.
Ties go to the first rate in grid order. Only the selected runs are evaluated and compared.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from unified.errors import ConfigError


def parse_lr_grid(text: str) -> list[float]:
    """"3e-4,1e-3" -> [0.0003, 0.001]; every rate finite and > 0, no repeats (order kept)."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--lr_grid must be comma-separated numbers (e.g. 3e-4,1e-3,3e-3), got {text!r}") from None
    if not rates or not all(0 < r < float("inf") for r in rates):
        raise ConfigError(f"--lr_grid needs learning rates > 0 (e.g. 3e-4,1e-3,3e-3), got {text!r}")
    return list(dict.fromkeys(rates))


def lr_dirname(lr: float) -> str:
    """Folder of one rate: lr0.001, lr0.0003 ..."""
    return f"lr{lr:g}"


def validation_score(run_dir: Path, metric: str) -> float | None:
    """The selection score of one run from its own validation records (never the eval grid):
    best validation loss, or validation exact match at the best step. None when absent."""
    from unified.compare.runs import load_run, run_metrics

    run = load_run(run_dir)
    if run.summary is None:
        return None
    if metric == "val_loss":
        return run_metrics(run).get("best_val_loss")
    best = run.summary.get("best_step")
    vals = [r for r in run.metrics if r.get("kind") == "val" and r.get("step") == best]
    value = vals[-1].get("val_exact_match") if vals else None
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class LRChoice:
    """The rate chosen for one row, with every rate's seed-mean score (None: incomplete)."""

    row: str
    metric: str
    scores: dict[float, float | None]
    per_seed: dict[float, list[float | None]] = field(default_factory=dict)
    chosen: float | None = None


def select_lr(row: str, runs_by_lr: dict[float, Sequence[Path]], metric: str = "val_loss") -> LRChoice:
    """Pick the rate with the best mean validation score over the row's seeds."""
    per_seed = {lr: [validation_score(Path(d), metric) for d in dirs] for lr, dirs in runs_by_lr.items()}
    scores = {lr: (statistics.fmean(v) if v and all(x is not None for x in v) else None)  # type: ignore[arg-type]
              for lr, v in per_seed.items()}
    ranked = [lr for lr in runs_by_lr if scores[lr] is not None]
    sign = 1.0 if metric == "val_loss" else -1.0
    chosen = min(ranked, key=lambda lr: sign * scores[lr]) if ranked else None  # type: ignore[operator]
    return LRChoice(row, metric, scores, per_seed, chosen)


def selection_markdown(choices: Sequence[LRChoice]) -> str:
    """The grid and the choice per row as a Markdown table (one column per rate)."""
    if not choices:
        return ""
    grid = list(choices[0].scores)
    metric = choices[0].metric
    better = "lower" if metric == "val_loss" else "higher"
    lines = [f"Selected per row on the held-out validation split ({metric}, mean over seeds, {better} is better); "
             f"only the selected runs were evaluated.", "",
             "| row | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | selected |",
             "|---|" + "---:|" * len(grid) + "---|"]
    for c in choices:
        cells = []
        for lr in grid:
            s = c.scores.get(lr)
            text = "incomplete" if s is None else f"{s:.4g}"
            cells.append(f"**{text}**" if lr == c.chosen else text)
        lines.append(f"| {c.row} | " + " | ".join(cells) + f" | {'none' if c.chosen is None else f'{c.chosen:g}'} |")
    return "\n".join(lines) + "\n"
