"""Algorithmic suite: exact match and token accuracy per task on an IID and an OOD-length grid.

Cells (`unified.data.batches.heldout_cell`): the IID cell of a task is stratified over the
difficulties of its train range (equal count per difficulty, or every distinct held-out prompt of
a difficulty with fewer), each OOD cell holds one OOD value; prompts are distinct and come from
the held-out `eval` split, whose equivalence classes training never samples. A task's cells depend
only on the task, its grid and the seed. Every cell reports `n`, `n_distinct` (statistics are over
the distinct examples), its chance floor (`floor`: the exact match of the best constant answer of
the cell, with `floor_answer`; `random_valid_rate` where the task's answers are a small fixed
set), and the prompt+answer token-length range, flagged `overlaps_train_length` for OOD cells
whose lengths reach into the training range.

Scoring is strict (`unified.data.scoring.strict_correct`, shared with the trainer's validation):
an example is correct only when the generated tokens are exactly the answer's tokens followed by
EOS, and then `Task.check` on the decoded text. Decoding is batched greedy with the cache, all
cells in one call (prompts of equal length share batches across cells and tasks).
Adaptive-compute variants also report mean compute steps over all positions and over answer
positions only.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from unified.data.batches import heldout_cell, train_length_range
from unified.data.scoring import pooled, score_examples, summarize
from unified.data.tasks import Task, get_task
from unified.errors import ConfigError
from unified.models import LanguageModel
from unified.progress import progress
from unified.text.tokenizer import Tokenizer

DEFAULT_LIMIT = 100


@dataclass
class AlgorithmicSettings:
    """Grid size and decoding of the algorithmic suite. `ood_grid` replaces a task's default OOD
    values (`Task.ood_values`) for the tasks it names."""

    limit: int = DEFAULT_LIMIT  # examples per (task, IID) and per (task, OOD value)
    seed: int = 0
    batch_size: int = 64
    ood_grid: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def ood_values(self, task: Task) -> tuple[int, ...]:
        """The OOD values evaluated for `task`."""
        return tuple(self.ood_grid.get(task.name, task.ood_values))


def parse_ood_grid(items: Sequence[str] | None, tasks: Sequence[Task]) -> dict[str, tuple[int, ...]]:
    """`["parity=16,32,64", "addition=5,6"]` -> {"parity": (16, 32, 64), "addition": (5, 6)}.

    Each value must be an integer above the task's train range, and the task must be evaluated;
    anything else is a one-line ConfigError naming what is accepted."""
    out: dict[str, tuple[int, ...]] = {}
    names = {t.name: t for t in tasks}
    for item in items or []:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--ood {item!r} is not TASK=V1,V2,... (e.g. parity=16,32,64)")
        if name not in names:
            get_task(name)  # unknown task: UnknownNameError listing the tasks
            raise ConfigError(f"--ood names task {name!r}, which is not evaluated (--tasks); "
                              f"evaluated: {', '.join(names)}")
        task = names[name]
        try:
            vals = tuple(sorted({int(v) for v in values.replace(",", " ").split()}))
        except ValueError:
            raise ConfigError(f"--ood {item!r}: values must be integers, e.g. {name}=16,32") from None
        hi = task.train_range[1]
        if not vals or any(v <= hi for v in vals):
            raise ConfigError(f"--ood {item!r}: OOD values must be integers above the train range "
                              f"{task.train_range[0]}..{hi} of {name!r}")
        out[name] = vals
    return out


def run_algorithmic(model: LanguageModel, tokenizer: Tokenizer, tasks: Sequence[Task],
                    settings: AlgorithmicSettings) -> dict[str, Any]:
    """The suite's payload: per task the IID cell (with a per-difficulty breakdown) and one cell
    per OOD value, each with n, n_distinct, floor and length range; pooled IID and OOD numbers.

    Every cell of every task is decoded in one `score_examples` call (each cell keeps its own
    token budget), so prompts of equal length share batches across cells and tasks: far fewer
    decoding loops than one call per cell, with the same rows."""
    grid: list[tuple[Task, int | None, list]] = []  # (task, OOD value or None for IID, examples)
    for task in tasks:
        lo, hi = task.train_range
        grid.append((task, None, heldout_cell(task, "eval", list(range(lo, hi + 1)), settings.limit, settings.seed)))
        grid += [(task, d, heldout_cell(task, "eval", [d], settings.limit, settings.seed))
                 for d in settings.ood_values(task)]
    examples = [e for _, _, exs in grid for e in exs]
    keys = [c for c, (_, _, exs) in enumerate(grid) for _ in exs]
    with progress(total=len(examples), desc="algorithmic") as bar:  # a bar on a terminal (unified.progress)
        scored = score_examples(model, tokenizer, examples, settings.batch_size, cells=keys, on_batch=bar.update)
    cell_rows: list[list[dict[str, Any]]] = [[] for _ in grid]
    for key, row in zip(keys, scored):
        cell_rows[key].append(row)
    per_task: dict[str, Any] = {}
    iid_cells, ood_cells, all_iid, all_ood = [], [], [], []
    for (task, value, _), rows in zip(grid, cell_rows):
        if value is None:
            lo, hi = task.train_range
            by_d: dict[int, list] = defaultdict(list)
            for r in rows:
                by_d[r["difficulty"]].append(r)
            iid = {**summarize(rows, task),
                   "by_difficulty": {str(d): summarize(v, task) for d, v in sorted(by_d.items())}}
            train_len = list(train_length_range(task, tokenizer))
            per_task[task.name] = {"iid": iid, "train_range": [lo, hi], "train_length_range": train_len, "ood": {},
                                   "ood_values": list(settings.ood_values(task)),
                                   "examples": [{"prompt": r["prompt"], "prediction": r["prediction"],
                                                 "correct": bool(r["correct"])} for r in rows[:3]]}
            iid_cells.append(iid)
            all_iid += rows
            continue
        entry = per_task[task.name]
        cell = summarize(rows, task)
        cell["overlaps_train_length"] = bool(rows) and cell["length_range"][0] <= entry["train_length_range"][1]
        entry["ood"][str(value)] = cell
        ood_cells.append(cell)
        all_ood += rows
    iid_sum, ood_sum = pooled(iid_cells, all_iid), pooled(ood_cells, all_ood)
    steps = {k: iid_sum[k] for k in ("mean_steps", "mean_steps_answer") if k in iid_sum}
    return {"exact_match": iid_sum["exact_match"], "exact_match_stderr": iid_sum["exact_match_stderr"],
            "floor": iid_sum["floor"], "token_accuracy": iid_sum["token_accuracy"], "n": iid_sum["n"],
            "n_distinct": iid_sum["n_distinct"],
            "ood_exact_match": ood_sum["exact_match"], "ood_exact_match_stderr": ood_sum["exact_match_stderr"],
            "ood_floor": ood_sum["floor"], "ood_n_distinct": ood_sum["n_distinct"], **steps,
            "tasks": per_task, "limit": settings.limit, "seed": settings.seed,
            "ood_grid": {t.name: list(settings.ood_values(t)) for t in tasks}}
