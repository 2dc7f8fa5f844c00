"""Procedural algorithmic tasks with exact answers, for length/size generalisation tests.

Each task turns a `random.Random` and an integer difficulty into an `Example`: a short prompt
ending in "=" and the exact answer text. Prompts are plain ASCII meant to be tokenised one byte
per character, and start with a short tag naming the task. Answers are computed with Python ints
or direct algorithms (a bracket stack, a left-to-right fold), never by reformatting the prompt.

Every task has a training range of difficulties and a few larger out-of-distribution (OOD)
difficulties; `sample` accepts any difficulty >= 1, so the OOD values are sampled the same way.
Every default OOD difficulty is beyond the training range in length too: its shortest
prompt+answer is longer than the longest training one (`Task.char_bounds`, tested).
All randomness comes from the `rng` argument, so a seed fixes the stream on every machine and
under every PYTHONHASHSEED.

This module is the registry; the contract is in `unified.data.task_base`, the tasks in
`unified.data.tasks_numeric` and `unified.data.tasks_symbolic`.
"""
from __future__ import annotations

import random
from typing import Sequence

from unified.data.task_base import ENUMERATE_CAP, Example, Task
from unified.data.tasks_numeric import (AdditionTask, ChainTask, CompareTask, ModAddTask, MultiplicationTask,
                                        SuccessorTask)
from unified.data.tasks_recall import MQARTask
from unified.data.tasks_symbolic import CopyTask, DyckTask, ParityTask, ReverseTask, is_balanced
from unified.errors import ConfigError, UnknownNameError

__all__ = ["ENUMERATE_CAP", "Example", "Task", "TASKS", "TASK_NAMES", "get_task", "resolve_tasks",
           "task_of_prompt", "train_char_bounds", "ranges_table_markdown", "is_balanced"]

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        ModAddTask(),
        ParityTask(),
        AdditionTask(),
        MultiplicationTask(),
        CopyTask(),
        ReverseTask(),
        DyckTask(),
        ChainTask(),
        CompareTask(),
        SuccessorTask(),
        MQARTask(),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


_BY_TAG: dict[str, Task] = {t.tag: t for t in TASKS.values()}


def task_of_prompt(prompt: str) -> Task | None:
    """The registered task whose tag starts `prompt` ("add 1+2=" -> addition), else None."""
    return _BY_TAG.get(prompt.split(" ", 1)[0])


def train_char_bounds(task: Task) -> tuple[int, int]:
    """Exact (shortest, longest) len(prompt) + len(answer) over the task's whole train range."""
    lo, hi = task.train_range
    bounds = [task.char_bounds(d) for d in range(lo, hi + 1)]
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


def get_task(name: str) -> Task:
    """The task called `name`; raises UnknownNameError listing the valid names otherwise."""
    if name not in TASKS:
        raise UnknownNameError("task", name, TASK_NAMES)
    return TASKS[name]


def resolve_tasks(names: str | Sequence[str] | None) -> list[Task]:
    """Turn None, "all", "a,b" or ["a", "b"] into Task objects (in the order given, no repeats)."""
    if names is None:
        return list(TASKS.values())
    if isinstance(names, str):
        names = names.split(",")
    wanted = [n.strip() for n in names if n.strip()]
    if not wanted:
        raise ConfigError(f"no task names given; accepted: {', '.join(TASK_NAMES)} or 'all'")
    if wanted == ["all"]:
        return list(TASKS.values())
    out: list[Task] = []
    for n in wanted:
        task = get_task(n)
        if task not in out:
            out.append(task)
    return out


def ranges_table_markdown() -> str:
    """Markdown table of every task's ranges with one example drawn by random.Random(0).

    The example is taken at the top of the train range so docs/data.md shows a typical prompt.
    The tokens column is the exact "BOS prompt answer EOS" length range of training under the
    byte tokenizer and the shortest default OOD example (always longer), from `char_bounds`.
    """
    rows = [
        "| task | difficulty | train range | OOD values | tokens: train / shortest OOD | "
        "equivalence class | example (prompt -> answer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in TASKS.values():
        lo, hi = task.train_range
        ex = task.sample(random.Random(0), hi)
        ood = ", ".join(str(v) for v in task.ood_values)
        t_lo, t_hi = train_char_bounds(task)
        o_lo = min(task.char_bounds(d)[0] for d in task.ood_values)
        rows.append(
            f"| {task.name} | {task.difficulty_name} | {lo}..{hi} | {ood} | "
            f"{t_lo + 2}..{t_hi + 2} / {o_lo + 2} | {task.twin_class} | `{ex.prompt}` -> `{ex.answer}` |"
        )
    return "\n".join(rows) + "\n"
