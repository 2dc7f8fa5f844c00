"""Held-out cells, splits by equivalence class, enumeration and exact length bounds of the tasks.

Answers of canonical prompts are re-derived by the independent solvers of tests/test_tasks.py.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.test_tasks import SOLVERS, parse
from unified.data.batches import (heldout_cell, heldout_sets, length_range, prompt_split,
                                  sample_split, train_length_range)
from unified.data.task_base import ENUMERATE_CAP
from unified.data.tasks import TASK_NAMES, TASKS, get_task, resolve_tasks, task_of_prompt, train_char_bounds
from unified.errors import ConfigError
from unified.text.tokenizer import ByteTokenizer

ROOT = Path(__file__).resolve().parents[1]
TOK = ByteTokenizer()


def _train_ds(task) -> range:
    return range(task.train_range[0], task.train_range[1] + 1)


def _solve(prompt: str) -> str:
    task = task_of_prompt(prompt)
    tag, solve = SOLVERS[task.name]
    return solve(parse(prompt, tag))


# ---------------------------------------------------------------- equivalence classes
def _twins(name: str, body: str, rng: random.Random) -> list[str]:
    """Trivially related bodies of `body`, built here independently of the task code."""
    if name in ("addition", "multiplication", "compare"):
        sep = {"addition": "+", "multiplication": "*", "compare": ","}[name]
        a, b = body.split(sep)
        return [f"{b}{sep}{a}"]
    if name == "mod_add":
        terms, mod = body.split("%")
        ops = terms.split("+")
        return ["+".join(p) + "%" + mod for p in itertools.islice(itertools.permutations(ops), 6)]
    if name == "reverse":
        return [body[::-1]]
    if name == "chain":  # shuffle inside runs of +/- and of *, and the leading digit in run one
        steps = [(body[i], body[i + 1]) for i in range(1, len(body), 2)]
        runs = [list(g) for _, g in itertools.groupby(steps, key=lambda s: s[0] == "*")]
        first = body[0]
        op = "*" if runs[0][0][0] == "*" else "+"
        pool = [first] + [x for o, x in runs[0] if o == op]
        rng.shuffle(pool)
        runs[0] = [(op, x) for x in pool[1:]] + [s for s in runs[0] if s[0] != op]
        for run in runs:
            rng.shuffle(run)
        return [pool[0] + "".join(o + x for run in runs for o, x in run)]
    return []


@pytest.mark.parametrize("name", TASK_NAMES)
def test_twins_share_class_and_split(name: str) -> None:
    task, rng = get_task(name), random.Random(21)
    tag = SOLVERS[name][0]
    n_twins = 0
    for d in [*_train_ds(task), *task.ood_values[:1]]:
        for _ in range(150):
            ex = task.sample(rng, d)
            canon = task.canonical_prompt(ex.prompt)
            assert task.canonical_prompt(canon) == canon  # idempotent
            assert len(canon) == len(ex.prompt)
            if name not in ("compare", "reverse"):  # mirrored pairs: the answer changes with them
                assert _solve(canon) == ex.answer, (ex.prompt, canon)
            for twin in _twins(name, parse(ex.prompt, tag), rng):
                twin_prompt = f"{tag} {twin}="
                n_twins += twin_prompt != ex.prompt
                assert task.canonical_prompt(twin_prompt) == canon, (ex.prompt, twin_prompt)
                assert prompt_split(twin_prompt) == prompt_split(ex.prompt) == prompt_split(ex.prompt, task)
    assert (n_twins > 100) == (name in ("addition", "multiplication", "compare", "mod_add", "reverse", "chain"))


def test_canonical_prompt_examples() -> None:
    assert get_task("addition").canonical_prompt("add 51+8=") == "add 8+51="
    assert get_task("compare").canonical_prompt("cmp 123,45=") == "cmp 45,123="
    assert get_task("mod_add").canonical_prompt("modadd 37+5+85%97=") == "modadd 5+37+85%97="
    assert get_task("reverse").canonical_prompt("rev cba=") == "rev abc="
    assert get_task("chain").canonical_prompt("chain 3+4-2*5*1=") == "chain 3+4-2*1*5="
    assert get_task("chain").canonical_prompt("chain 7*2-3+1=") == "chain 2*7+1-3="
    assert get_task("parity").canonical_prompt("parity 10=") == "parity 10="
    assert get_task("addition").canonical_prompt("not a prompt") == "not a prompt"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_no_heldout_class_occurs_in_training(name: str) -> None:
    """Sample many training prompts; no eval or val cell prompt's class may be among them."""
    task, rng = get_task(name), random.Random(5)
    train = set()
    for d in [*_train_ds(task), *task.ood_values[:1]]:
        for _ in range(400):
            ex = sample_split(task, rng, "train", d)
            if ex is not None:
                train.add(task.canonical_prompt(ex.prompt))
    assert len(train) > 100
    for split in ("eval", "val"):
        cells = heldout_cell(task, split, _train_ds(task), 200, 0) + heldout_cell(task, split, task.ood_values, 60, 0)
        assert cells
        assert not {task.canonical_prompt(e.prompt) for e in cells} & train


def test_split_fractions_roughly_as_documented() -> None:
    task = get_task("copy")
    counts = Counter(prompt_split(e.prompt, task) for e in task.enumerate(3))
    assert abs(counts["eval"] / 17576 - 0.10) < 0.01 and abs(counts["val"] / 17576 - 0.05) < 0.01


# ---------------------------------------------------------------- cells
@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("split", ["eval", "val"])
def test_cells_distinct_stratified_and_in_split(name: str, split: str) -> None:
    task = get_task(name)
    for ds, n in ((list(_train_ds(task)), 100), (list(task.ood_values), 50)):
        cell = heldout_cell(task, split, ds, n, seed=3)
        prompts = [e.prompt for e in cell]
        assert len(set(prompts)) == len(prompts)
        assert all(prompt_split(p) == split for p in prompts)
        assert all(e.meta["task"] == name and e.meta["ood"] == (e.meta["difficulty"] > task.train_range[1])
                   for e in cell)
        counts = Counter(e.meta["difficulty"] for e in cell)
        for i, d in enumerate(ds):
            share = n // len(ds) + (1 if i < n % len(ds) else 0)
            pool = task.enumerate(d)
            available = None if pool is None else sum(prompt_split(e.prompt) == split for e in pool)
            assert counts[d] == (share if available is None else min(share, available)), (d, counts)
        assert cell == heldout_cell(task, split, ds, n, seed=3)  # identical across calls
        assert cell == heldout_cell(task, split, list(reversed(ds)), n, seed=3)  # order of the grid


def test_small_spaces_are_taken_whole() -> None:
    task = get_task("parity")
    cell = heldout_cell(task, "eval", [3, 4, 5], 300, seed=0)
    for d in (3, 4, 5):
        every = {"".join(b) for b in itertools.product("01", repeat=d)}
        want = {p for p in (f"parity {b}=" for b in every) if prompt_split(p) == "eval"}
        assert {e.prompt for e in cell if e.meta["difficulty"] == d} == want
    succ = heldout_cell(get_task("successor"), "eval", [1], 50, seed=0)
    assert {e.prompt for e in succ} == {f"succ {k}=" for k in range(10) if prompt_split(f"succ {k}=") == "eval"}


def test_cells_independent_of_task_order_and_selection() -> None:
    full = heldout_sets(resolve_tasks("all"), "eval", 40, seed=1)
    some = heldout_sets(resolve_tasks("successor,addition"), "eval", 40, seed=1)
    assert some["addition"] == full["addition"] and some["successor"] == full["successor"]
    # a difficulty's examples do not depend on the other difficulties of the grid, and a larger
    # cell extends a smaller one
    a = heldout_cell(get_task("addition"), "eval", [7], 10, seed=1)
    b = heldout_cell(get_task("addition"), "eval", [5, 7, 8], 60, seed=1)
    assert [e for e in b if e.meta["difficulty"] == 7][:10] == a
    assert heldout_cell(get_task("addition"), "eval", [7], 10, seed=2) != a


def test_cells_deterministic_under_other_hash_seed() -> None:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from unified.data.batches import heldout_sets; "
            "from unified.data.tasks import resolve_tasks; "
            "print(json.dumps({k: [e.prompt for e in v] for k, v in "
            "heldout_sets(resolve_tasks('chain,dyck,mod_add'), 'eval', 30, 4).items()}))")
    env = {**os.environ, "PYTHONHASHSEED": "321"}
    res = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    here = {k: [e.prompt for e in v] for k, v in heldout_sets(resolve_tasks("chain,dyck,mod_add"), "eval", 30, 4).items()}
    assert json.loads(res.stdout) == here


def test_bad_cell_requests() -> None:
    task = get_task("parity")
    for kwargs, match in (({"split": "train"}, "split"), ({"n": -1}, "cell size"),
                          ({"difficulties": []}, "at least one difficulty"), ({"difficulties": [0]}, "difficulty")):
        args = {"task": task, "split": "eval", "difficulties": [2], "n": 5, "seed": 0, **kwargs}
        with pytest.raises(ConfigError, match=match):
            heldout_cell(**args)


# ---------------------------------------------------------------- prompt space and lengths
@pytest.mark.parametrize("name", TASK_NAMES)
def test_enumeration_is_the_generator_support_and_bounds_are_exact(name: str) -> None:
    task, rng = get_task(name), random.Random(8)
    enumerated_any = False
    for d in range(1, 9):
        pool = task.enumerate(d)
        if pool is None:
            continue
        enumerated_any = True
        assert len(pool) <= ENUMERATE_CAP
        by_prompt = {e.prompt: e for e in pool}
        assert len(by_prompt) == len(pool)
        seen = set()
        for _ in range(3000):
            ex = task.sample(rng, d)
            assert by_prompt[ex.prompt].answer == ex.answer
            seen.add(ex.prompt)
        if len(pool) <= 40:
            assert seen == set(by_prompt)  # every enumerated prompt is reachable
        assert all(_solve(e.prompt) == e.answer for e in pool[:: max(1, len(pool) // 300)])
        lengths = [len(e.prompt) + len(e.answer) for e in pool]
        assert (min(lengths), max(lengths)) == task.char_bounds(d), d
    assert enumerated_any
    for d in [*_train_ds(task), *task.ood_values]:
        lo, hi = task.char_bounds(d)
        lengths = [len(e.prompt) + len(e.answer) for e in (task.sample(rng, d) for _ in range(300))]
        assert lo <= min(lengths) and max(lengths) <= hi


@pytest.mark.parametrize("name", TASK_NAMES)
def test_default_ood_cells_are_longer_than_all_training(name: str) -> None:
    task = get_task(name)
    t_lo, t_hi = train_length_range(task, TOK)
    assert (t_lo, t_hi) == tuple(x + 2 for x in train_char_bounds(task))  # BOS + EOS
    for d in task.ood_values:
        assert task.char_bounds(d)[0] + 2 > t_hi, (d, task.char_bounds(d), t_hi)
        cell = heldout_cell(task, "eval", [d], 30, seed=0)
        lo, hi = length_range(cell, TOK)
        assert lo > t_hi and hi <= task.char_bounds(d)[1] + 2
    train_cell = heldout_cell(task, "eval", _train_ds(task), 60, seed=0)
    assert t_lo <= length_range(train_cell, TOK)[0] and length_range(train_cell, TOK)[1] <= t_hi
    if name == "parity":
        assert max(task.ood_values) >= 64


def test_length_range_requires_examples() -> None:
    with pytest.raises(ConfigError):
        length_range([], TOK)


def test_strict_check() -> None:
    task = TASKS["addition"]
    assert task.check("168", "168")
    for wrong in ("168 ", " 168", "168\n", "0168", "16", ""):
        assert not task.check(wrong, "168")
