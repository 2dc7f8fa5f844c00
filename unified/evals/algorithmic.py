"""Algorithmic suite: exact match and token accuracy per task on an IID and an OOD-length grid.

Cells (`unified.data.heldout_cell`): the IID cell of a task is stratified over the difficulties of
its train range (equal count per difficulty, or every distinct held-out prompt of a difficulty
with fewer), each OOD cell holds one OOD value; prompts are distinct and come from the held-out
`eval` split, whose equivalence classes training never samples. A task's cells depend only on the
task, its grid and the seed. Every cell reports `n`, `n_distinct` (statistics are over the
distinct examples), its chance floor (`floor`: the exact match of the best constant answer of the
cell, with `floor_answer`; `random_valid_rate` where the task's answers are a small fixed set),
and the prompt+answer token-length range, flagged `overlaps_train_length` for OOD cells whose
lengths reach into the training range.

Scoring is strict (`strict_correct`): an example is correct only when the generated tokens are
exactly the answer's tokens followed by EOS, and then `Task.check` on the decoded text.
Decoding is batched greedy with the cache. Adaptive-compute variants also report mean compute
steps over all positions and over answer positions only.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from unified.data import encode_example, heldout_cell, train_length_range
from unified.models.decoding import DecodeSettings, generate
from unified.errors import ConfigError
from unified.evals.results import mean_stderr
from unified.models import LanguageModel
from unified.progress import progress
from unified.tasks import Example, Task, get_task
from unified.text.tokenizer import Tokenizer

DEFAULT_LIMIT = 100
# Tasks whose answers are a small fixed set: a uniformly random valid answer scores 1/len(set).
# (mod_add's 97 residues are listed for completeness; its constant-answer floor is the clearer number.)
VALID_ANSWERS: dict[str, tuple[str, ...]] = {"parity": ("0", "1"), "dyck": ("0", "1"), "compare": ("<", "=", ">"),
                                             "mod_add": tuple(str(r) for r in range(97))}


@dataclass
class AlgorithmicSettings:
    """Grid size and decoding of the algorithmic suite. `ood_grid` replaces a task's default OOD
    values (`Task.ood_values`) for the tasks it names."""

    limit: int = DEFAULT_LIMIT  # examples per (task, IID) and per (task, OOD value)
    seed: int = 0
    batch_size: int = 64
    ood: bool = True
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


# ---- strict scoring ------------------------------------------------------------------------
def strict_correct(pred: Sequence[int], ended: bool, answer: Sequence[int]) -> bool:
    """The generated tokens are exactly `answer` and generation then stopped at EOS (`ended`).
    Extra tokens (PAD, BOS, spaces), missing tokens and a missing EOS are all wrong."""
    return bool(ended) and list(pred) == list(answer)


def token_accuracy(pred: Sequence[int], ended: bool, answer: Sequence[int], eos_id: int) -> float:
    """Position-wise matches between the prediction and answer + EOS, divided by the longer of
    the two: target = answer + [EOS]; predicted = pred (+ [EOS] when generation ended on it);
    accuracy = #{i : predicted[i] == target[i]} / max(len(predicted), len(target)). Extra and
    missing tokens count as errors, so only the exact answer with its EOS scores 1."""
    target = list(answer) + [eos_id]
    got = list(pred) + ([eos_id] if ended else [])
    hits = sum(1 for p, t in zip(got, target) if p == t)
    return hits / max(len(got), len(target))


def score_examples(model: LanguageModel, tokenizer: Tokenizer, examples: Sequence[Example],
                   batch_size: int = 64) -> list[dict[str, Any]]:
    """Greedy-decode every example; per example: prompt, answer, correct (strict, see
    `strict_correct`, then `Task.check`), token accuracy, prediction text, whether generation
    ended on EOS, compute steps (all positions and answer positions; None for fixed-compute
    variants) and token length of "BOS prompt answer EOS" (as trained, `encode_example`)."""
    if not examples:
        return []
    prompts = [[tokenizer.bos_id] + tokenizer.encode(e.prompt) for e in examples]
    answers = [tokenizer.encode(e.answer) for e in examples]
    settings = DecodeSettings(max_new_tokens=max(len(a) for a in answers) + 4)
    gen = generate(model, prompts, tokenizer.eos_id, settings, batch_size=batch_size)
    ended = gen.ended if gen.ended is not None else [len(t) < settings.max_new_tokens for t in gen.tokens]
    answer_steps = gen.answer_steps if gen.answer_steps is not None else [None] * len(examples)
    rows = []
    for ex, ans, pred, eos, steps, a_steps in zip(examples, answers, gen.tokens, ended, gen.mean_steps,
                                                  answer_steps):
        text = tokenizer.decode(pred)
        correct = strict_correct(pred, eos, ans) and get_task(ex.meta["task"]).check(text, ex.answer)
        rows.append({"task": ex.meta["task"], "difficulty": ex.meta["difficulty"], "prompt": ex.prompt,
                     "answer": ex.answer, "correct": float(correct),
                     "token_accuracy": token_accuracy(pred, eos, ans, tokenizer.eos_id), "prediction": text,
                     "ended": bool(eos), "steps": steps, "answer_steps": a_steps,
                     "length": len(encode_example(tokenizer, ex)[0])})
    return rows


# ---- cell summaries --------------------------------------------------------------------------
def constant_answer_floor(answers: Sequence[str]) -> tuple[float, str | None]:
    """Exact match of the best constant answer over `answers` (the most frequent one; ties go
    to the smallest string, so the choice is deterministic) and that answer."""
    if not answers:
        return float("nan"), None
    counts = Counter(answers)
    best = min(counts, key=lambda a: (-counts[a], a))
    return counts[best] / len(answers), best


def distinct_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of every distinct prompt (cells are distinct by construction; this keeps
    the statistics honest even if a duplicate slipped in)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = r.get("prompt")
        if key is None or key not in seen:  # rows without a prompt (stand-ins) count as distinct
            seen.add(key)
            out.append(r)
    return out


def summarize(rows: Sequence[dict[str, Any]], task: Task | None = None) -> dict[str, Any]:
    """A cell's numbers: exact_match (+stderr), token_accuracy, n, n_distinct, the chance floor
    (and the random-valid-answer rate when `task` has a small answer set), the prompt+answer
    token-length range and mean compute steps, all over the distinct examples."""
    distinct = distinct_rows(rows)
    em, se = mean_stderr([r["correct"] for r in distinct])
    tok, _ = mean_stderr([r["token_accuracy"] for r in distinct])
    floor, floor_answer = constant_answer_floor([r["answer"] for r in distinct if "answer" in r])
    out: dict[str, Any] = {"exact_match": em, "exact_match_stderr": se, "token_accuracy": tok, "n": len(rows),
                           "n_distinct": len(distinct), "floor": floor, "floor_answer": floor_answer}
    space = VALID_ANSWERS.get(task.name) if task is not None else None
    if space:
        out["random_valid_rate"] = 1.0 / len(space)
    if "length" in (distinct[0] if distinct else {}):
        lengths = [r["length"] for r in distinct]
        out["length_range"] = [min(lengths), max(lengths)]
    for key, name in (("steps", "mean_steps"), ("answer_steps", "mean_steps_answer")):
        steps = [r[key] for r in distinct if r.get(key) is not None]
        if steps:
            out[name] = sum(steps) / len(steps)
    return out


def pooled(cells: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Exact match over the rows of several cells, with the floor of answering each cell's best
    constant (the n-weighted mean of the cells' floors)."""
    out = summarize(rows)
    total = sum(c["n_distinct"] for c in cells)
    out["floor"] = sum(c["floor"] * c["n_distinct"] for c in cells) / total if total else float("nan")
    out.pop("floor_answer", None)
    out.pop("length_range", None)
    return out


def run_algorithmic(model: LanguageModel, tokenizer: Tokenizer, tasks: Sequence[Task],
                    settings: AlgorithmicSettings) -> dict[str, Any]:
    """The suite's payload: per task the IID cell (with a per-difficulty breakdown) and one cell
    per OOD value, each with n, n_distinct, floor and length range; pooled IID and OOD numbers."""
    per_task: dict[str, Any] = {}
    iid_cells, ood_cells, all_iid, all_ood = [], [], [], []
    for task in progress(tasks, desc="algorithmic"):  # a bar on a terminal (unified.progress)
        lo, hi = task.train_range
        iid_examples = heldout_cell(task, "eval", list(range(lo, hi + 1)), settings.limit, settings.seed)
        rows = score_examples(model, tokenizer, iid_examples, settings.batch_size)
        by_d: dict[int, list] = defaultdict(list)
        for r in rows:
            by_d[r["difficulty"]].append(r)
        iid = {**summarize(rows, task), "by_difficulty": {str(d): summarize(v, task) for d, v in sorted(by_d.items())}}
        train_len = list(train_length_range(task, tokenizer))
        entry: dict[str, Any] = {"iid": iid, "train_range": [lo, hi], "train_length_range": train_len, "ood": {}}
        iid_cells.append(iid)
        all_iid += rows
        if settings.ood:
            entry["ood_values"] = list(settings.ood_values(task))
            for d in settings.ood_values(task):
                exs = heldout_cell(task, "eval", [d], settings.limit, settings.seed)
                ood_rows = score_examples(model, tokenizer, exs, settings.batch_size)
                cell = summarize(ood_rows, task)
                cell["overlaps_train_length"] = bool(ood_rows) and cell["length_range"][0] <= train_len[1]
                entry["ood"][str(d)] = cell
                ood_cells.append(cell)
                all_ood += ood_rows
        entry["examples"] = [{"prompt": r["prompt"], "prediction": r["prediction"], "correct": bool(r["correct"])}
                             for r in rows[:3]]
        per_task[task.name] = entry
    iid_sum, ood_sum = pooled(iid_cells, all_iid), pooled(ood_cells, all_ood)
    steps = {k: iid_sum[k] for k in ("mean_steps", "mean_steps_answer") if k in iid_sum}
    return {"exact_match": iid_sum["exact_match"], "exact_match_stderr": iid_sum["exact_match_stderr"],
            "floor": iid_sum["floor"], "token_accuracy": iid_sum["token_accuracy"], "n": iid_sum["n"],
            "n_distinct": iid_sum["n_distinct"],
            "ood_exact_match": ood_sum["exact_match"], "ood_exact_match_stderr": ood_sum["exact_match_stderr"],
            "ood_floor": ood_sum["floor"], "ood_n_distinct": ood_sum["n_distinct"], **steps,
            "tasks": per_task, "limit": settings.limit, "seed": settings.seed,
            "ood_grid": {t.name: list(settings.ood_values(t)) for t in tasks} if settings.ood else {}}
