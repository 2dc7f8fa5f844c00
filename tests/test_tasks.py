"""Tests for unified.data.tasks: answers are re-derived by independent parsers and solvers here."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from unified.data.tasks import TASK_NAMES, TASKS, Example, get_task, ranges_table_markdown, resolve_tasks
from unified.errors import ConfigError, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 300


# ---------------------------------------------------------------- independent reference solvers
def _ints(text: str, sep: str) -> list[int]:
    parts = text.split(sep)
    assert all(re.fullmatch(r"0|[1-9][0-9]*", p) for p in parts), text
    return [int(p) for p in parts]


def solve_mod_add(body: str) -> str:
    terms, mod = body.split("%")
    assert mod == "97"
    total = 0
    for x in _ints(terms, "+"):
        assert 0 <= x < 97
        total += x
    return str(total % 97)


def solve_parity(body: str) -> str:
    assert set(body) <= {"0", "1"}
    return str(sum(int(c) for c in body) % 2)


def solve_addition(body: str) -> str:
    a, b = _ints(body, "+")
    return str(a + b)


def solve_multiplication(body: str) -> str:
    a, b = _ints(body, "*")
    return str(a * b)


def solve_copy(body: str) -> str:
    assert re.fullmatch(r"[a-z]+", body)
    return body


def solve_reverse(body: str) -> str:
    assert re.fullmatch(r"[a-z]+", body)
    return "".join(body[i] for i in range(len(body) - 1, -1, -1))


def solve_dyck(body: str) -> str:
    assert set(body) <= set("()[]")
    stack: list[str] = []
    for c in body:
        if c in "([":
            stack.append(c)
        else:
            want = "(" if c == ")" else "["
            if not stack or stack[-1] != want:
                return "0"
            stack.pop()
    return "1" if not stack else "0"


def solve_chain(body: str) -> str:
    assert re.fullmatch(r"[0-9]([-+*][0-9])+", body), body
    acc = int(body[0])
    for i in range(1, len(body), 2):
        op, x = body[i], int(body[i + 1])
        acc = acc + x if op == "+" else acc - x if op == "-" else acc * x
    return str(acc)


def solve_compare(body: str) -> str:
    a, b = _ints(body, ",")
    return "<" if a < b else ">" if a > b else "="


def solve_successor(body: str) -> str:
    (n,) = _ints(body, "+")
    return str(n + 1)


def solve_mqar(body: str) -> str:
    pairs, queries = body.split("?")
    table = {pairs[i]: pairs[i + 1] for i in range(0, len(pairs), 2)}
    return "".join(table[q] for q in queries)


SOLVERS = {
    "mod_add": ("modadd", solve_mod_add),
    "parity": ("parity", solve_parity),
    "addition": ("add", solve_addition),
    "multiplication": ("mul", solve_multiplication),
    "copy": ("copy", solve_copy),
    "reverse": ("rev", solve_reverse),
    "dyck": ("dyck", solve_dyck),
    "chain": ("chain", solve_chain),
    "compare": ("cmp", solve_compare),
    "successor": ("succ", solve_successor),
    "mqar": ("mqar", solve_mqar),
}


def parse(prompt: str, tag: str) -> str:
    """Strip "<tag> " and the trailing "="; return the body."""
    assert prompt.startswith(tag + " ") and prompt.endswith("="), prompt
    return prompt[len(tag) + 1 : -1]


def difficulties(task) -> list[int]:
    lo, hi = task.train_range
    return sorted({lo, (lo + hi) // 2, hi, *task.ood_values})


# ---------------------------------------------------------------- tests
def test_registry_order_and_names() -> None:
    assert TASK_NAMES == (
        "mod_add", "parity", "addition", "multiplication", "copy",
        "reverse", "dyck", "chain", "compare", "successor", "mqar",
    )
    assert list(TASKS) == list(TASK_NAMES)
    assert set(SOLVERS) == set(TASK_NAMES)
    for name, task in TASKS.items():
        assert task.name == name and task.difficulty_name and task.description


@pytest.mark.parametrize("name", TASK_NAMES)
def test_answers_match_independent_solver(name: str) -> None:
    task = get_task(name)
    tag, solve = SOLVERS[name]
    rng = random.Random(1234)
    for d in difficulties(task):
        for _ in range(N_SAMPLES):
            ex = task.sample(rng, d)
            assert isinstance(ex, Example)
            assert ex.meta["task"] == name and ex.meta["difficulty"] == d
            assert ex.answer == ex.answer.strip() and ex.answer
            assert solve(parse(ex.prompt, tag)) == ex.answer, ex
            assert task.check(ex.answer, ex.answer)
            assert not task.check(" " + ex.answer + "\n", ex.answer)  # strict: no whitespace forgiveness
            assert not task.check(ex.answer + "0", ex.answer)
            assert not task.check("", ex.answer)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_difficulty_controls_size(name: str) -> None:
    task = get_task(name)
    tag = SOLVERS[name][0]
    rng = random.Random(7)
    for d in difficulties(task):
        body = parse(task.sample(rng, d).prompt, tag)
        if name in ("parity", "copy", "reverse"):
            assert len(body) == d
        elif name == "dyck":
            assert len(body) == 2 * d
        elif name == "mod_add":
            assert body.count("+") == d - 1
        elif name == "chain":
            assert len(body) == 2 * d + 1
        elif name == "successor":
            assert len(body) == d
        elif name == "mqar":  # d pairs, "?", d queries
            assert len(body) == 3 * d + 1 and sorted(body.split("?")[1]) == sorted(body[0:2 * d:2])
        else:  # two operands, the longer has exactly d digits
            assert max(len(p) for p in re.split(r"[+*,]", body)) == d


@pytest.mark.parametrize("name", TASK_NAMES)
def test_ranges_and_curriculum(name: str) -> None:
    task = get_task(name)
    lo, hi = task.train_range
    assert 1 <= lo <= hi
    assert task.ood_values and all(v > hi for v in task.ood_values)
    assert list(task.ood_values) == sorted(set(task.ood_values))
    assert task.train_difficulty(0) == lo and task.train_difficulty(1) == hi
    levels = [i / 200 for i in range(201)]
    values = [task.train_difficulty(x) for x in levels]
    assert values == sorted(values)
    assert set(values) == set(range(lo, hi + 1))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError):
            task.train_difficulty(bad)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_bad_difficulty_rejected(name: str) -> None:
    task = get_task(name)
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ConfigError, match="difficulty"):
            task.sample(random.Random(0), bad)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_prompt_length_at_largest_ood(name: str) -> None:
    task = get_task(name)
    rng = random.Random(3)
    d = max(task.ood_values)
    longest = max(len(e.prompt) + len(e.answer) for e in (task.sample(rng, d) for _ in range(500)))
    assert longest < 200
    for e in (task.sample(rng, d) for _ in range(50)):
        assert (e.prompt + e.answer).isascii() and "\n" not in e.prompt + e.answer


def _stream(seed: int, n: int = 5) -> list[list[str]]:
    out = []
    for name, task in TASKS.items():
        rng = random.Random(seed)
        for d in (task.train_range[1], max(task.ood_values)):
            for _ in range(n):
                e = task.sample(rng, d)
                out.append([name, e.prompt, e.answer])
    return out


def test_determinism_same_seed_and_different_seed() -> None:
    assert _stream(11) == _stream(11)
    assert _stream(11) != _stream(12)
    for name, task in TASKS.items():
        a = [task.sample(random.Random(s), max(task.ood_values)).prompt for s in range(20)]
        assert len(set(a)) > 10, name


def test_determinism_across_hash_seed_in_subprocess() -> None:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.test_tasks import _stream; print(json.dumps(_stream(11)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    res = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert json.loads(res.stdout) == _stream(11)


def test_global_random_state_untouched() -> None:
    random.seed(99)
    before = random.getstate()
    for task in TASKS.values():
        task.sample(random.Random(0), task.train_range[1])
    assert random.getstate() == before


@pytest.mark.parametrize("d", [1, 3, 6, 8, 16])
def test_dyck_label_balance(d: int) -> None:
    task = get_task("dyck")
    rng = random.Random(5)
    labels = Counter(task.sample(rng, d).answer for _ in range(1000))
    assert set(labels) == {"0", "1"}
    assert 0.3 <= labels["1"] / 1000 <= 0.7


def test_dyck_unbalanced_are_near_misses() -> None:
    """Most unbalanced strings keep equal counts of openers and closers (swap/type edits)."""
    task = get_task("dyck")
    rng = random.Random(6)
    bad = [parse(e.prompt, "dyck") for e in (task.sample(rng, 8) for _ in range(600)) if e.answer == "0"]
    same_count = sum(s.count("(") + s.count("[") == len(s) // 2 for s in bad)
    assert same_count / len(bad) > 0.4


@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_compare_all_answers(d: int) -> None:
    task = get_task("compare")
    rng = random.Random(8)
    answers = Counter(task.sample(rng, d).answer for _ in range(600))
    assert set(answers) == {"<", ">", "="}
    assert answers["="] > 100


def test_successor_carries_common() -> None:
    task = get_task("successor")
    rng = random.Random(9)
    exs = [task.sample(rng, 4) for _ in range(600)]
    assert sum(parse(e.prompt, "succ").endswith("9") for e in exs) > 250
    assert any(len(e.answer) == 5 for e in exs)  # 9999 -> 10000 occurs


def test_chain_can_be_negative() -> None:
    task = get_task("chain")
    rng = random.Random(10)
    assert any(task.sample(rng, 3).answer.startswith("-") for _ in range(300))


def test_get_task_unknown() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_task("nope")
    msg = str(info.value)
    assert "nope" in msg and all(n in msg for n in TASK_NAMES)


def test_resolve_tasks() -> None:
    assert [t.name for t in resolve_tasks("parity,copy")] == ["parity", "copy"]
    assert [t.name for t in resolve_tasks(" parity , copy ")] == ["parity", "copy"]
    assert [t.name for t in resolve_tasks(["dyck", "chain"])] == ["dyck", "chain"]
    assert [t.name for t in resolve_tasks(None)] == list(TASK_NAMES)
    assert [t.name for t in resolve_tasks("all")] == list(TASK_NAMES)
    with pytest.raises(UnknownNameError):
        resolve_tasks("parity,nope")
    with pytest.raises(ConfigError):
        resolve_tasks("")


def test_ranges_table_markdown() -> None:
    table = ranges_table_markdown()
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(TASK_NAMES)
    assert table == ranges_table_markdown()  # deterministic
    for name, line in zip(TASK_NAMES, lines[2:]):
        task = TASKS[name]
        assert line.startswith(f"| {name} | {task.difficulty_name} |")
        ex = task.sample(random.Random(0), task.train_range[1])
        assert f"`{ex.prompt}` -> `{ex.answer}`" in line


def test_docs_tasks_table_is_current() -> None:
    """The tasks table of docs/data.md is exactly what `ranges_table_markdown` prints today."""
    assert ranges_table_markdown() in (ROOT / "docs" / "data.md").read_text()
