"""Algorithmic suite: exact match and token accuracy per task on an IID and an OOD-length grid.

IID cells draw difficulties uniformly from each task's train range; OOD cells use each of the
task's OOD values (all strictly above the train range). Every prompt comes from the held-out
`eval` split (`unified.data.prompt_split`), which training never samples, so no evaluated
prompt was trained on. Decoding is batched greedy with the cache. For adaptive-compute variants
the mean compute steps per task and per length are reported too.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from unified.data import heldout_examples
from unified.decoding import DecodeSettings, generate
from unified.evals.results import mean_stderr
from unified.model import LanguageModel
from unified.tasks import Example, Task
from unified.tokenizer import Tokenizer


@dataclass
class AlgorithmicSettings:
    """Grid size and decoding of the algorithmic suite."""

    limit: int = 100  # examples per (task, IID) and per (task, OOD value)
    seed: int = 0
    batch_size: int = 64
    ood: bool = True


def score_examples(model: LanguageModel, tokenizer: Tokenizer, examples: Sequence[Example],
                   batch_size: int = 64) -> list[dict[str, Any]]:
    """Greedy-decode every example; per example: correct, token accuracy, prediction, steps."""
    if not examples:
        return []
    prompts = [[tokenizer.bos_id] + tokenizer.encode(e.prompt) for e in examples]
    answers = [tokenizer.encode(e.answer) for e in examples]
    settings = DecodeSettings(max_new_tokens=max(len(a) for a in answers) + 4)
    gen = generate(model, prompts, tokenizer.eos_id, settings, batch_size=batch_size)
    rows = []
    for ex, ans, pred, steps in zip(examples, answers, gen.tokens, gen.mean_steps):
        hits = sum(1 for i, t in enumerate(ans) if i < len(pred) and pred[i] == t)
        text = tokenizer.decode(pred)
        rows.append({"task": ex.meta["task"], "difficulty": ex.meta["difficulty"],
                     "correct": float(text.strip() == ex.answer.strip()),
                     "token_accuracy": hits / max(1, len(ans)), "prediction": text, "steps": steps})
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """exact_match (+stderr), token_accuracy, n and mean compute steps of a set of scored rows."""
    em, se = mean_stderr([r["correct"] for r in rows])
    tok, _ = mean_stderr([r["token_accuracy"] for r in rows])
    out: dict[str, Any] = {"exact_match": em, "exact_match_stderr": se, "token_accuracy": tok, "n": len(rows)}
    steps = [r["steps"] for r in rows if r["steps"] is not None]
    if steps:
        out["mean_steps"] = sum(steps) / len(steps)
    return out


def run_algorithmic(model: LanguageModel, tokenizer: Tokenizer, tasks: Sequence[Task],
                    settings: AlgorithmicSettings) -> dict[str, Any]:
    """The suite's payload: per task IID (with per-difficulty breakdown) and OOD cells, overall means."""
    per_task: dict[str, Any] = {}
    all_iid: list[dict] = []
    all_ood: list[dict] = []
    iid = heldout_examples(tasks, "eval", settings.limit, settings.seed)
    for task in tasks:
        rows = score_examples(model, tokenizer, iid[task.name], settings.batch_size)
        by_d: dict[int, list] = defaultdict(list)
        for r in rows:
            by_d[r["difficulty"]].append(r)
        entry: dict[str, Any] = {"iid": {**summarize(rows),
                                         "by_difficulty": {str(d): summarize(v) for d, v in sorted(by_d.items())}},
                                 "train_range": list(task.train_range), "ood": {}}
        all_iid += rows
        if settings.ood:
            for d in task.ood_values:
                exs = heldout_examples([task], "eval", settings.limit, settings.seed, difficulty=d)[task.name]
                ood_rows = score_examples(model, tokenizer, exs, settings.batch_size)
                entry["ood"][str(d)] = summarize(ood_rows)
                all_ood += ood_rows
        entry["examples"] = [{"prediction": r["prediction"], "correct": bool(r["correct"])} for r in rows[:3]]
        per_task[task.name] = entry
    iid_sum, ood_sum = summarize(all_iid), summarize(all_ood)
    return {"exact_match": iid_sum["exact_match"], "exact_match_stderr": iid_sum["exact_match_stderr"],
            "token_accuracy": iid_sum["token_accuracy"],
            "ood_exact_match": ood_sum["exact_match"], "ood_exact_match_stderr": ood_sum["exact_match_stderr"],
            **({"mean_steps": iid_sum["mean_steps"]} if "mean_steps" in iid_sum else {}),
            "tasks": per_task, "limit": settings.limit, "seed": settings.seed}
