"""Arithmetic tasks on decimal integers: mod_add, addition, multiplication, chain, compare,
successor (see `unified.data.tasks` for the registry and `unified.data.task_base` for the contract).

Equivalence classes ("trivial twins") are prompts that show the same inputs in another order,
so that a memorised association of those inputs answers both; each docstring names its class.
"""
from __future__ import annotations

import itertools
import random
from typing import Iterator

from unified.data.task_base import Task, lowest, number


def _pairs(digits: int) -> Iterator[tuple[int, int]]:
    """Every ordered pair of integers that both have exactly `digits` digits."""
    values = range(lowest(digits), 10**digits)
    return itertools.product(values, values)


def _pairs_longer(digits: int) -> Iterator[tuple[int, int]]:
    """Every ordered pair of integers whose longer member has exactly `digits` digits."""
    lo = lowest(digits)
    for a in range(10**digits):
        for b in range(10**digits):
            if a >= lo or b >= lo:
                yield a, b


def _sorted_operands(body: str, sep: str) -> str:
    return sep.join(sorted(body.split(sep), key=int))


class ModAddTask(Task):
    """Sum of residues modulo 97. Difficulty = number of operands, each uniform in 0..96.

    Format: ``modadd 37+85%97=`` -> ``25``. The modulus is fixed and shown so the prompt is
    self-describing; the answer is ``sum(operands) % 97`` in decimal.
    Equivalence class: every reordering of the operands (``37+85`` ~ ``85+37``).
    """

    name, tag, difficulty_name = "mod_add", "modadd", "operands"
    train_range, ood_values = (2, 3), (6, 8)
    description = "sum of residues modulo 97"
    twin_class = "operand order"
    modulus = 97

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        ops = [rng.randrange(self.modulus) for _ in range(difficulty)]
        return self._body(ops), str(sum(ops) % self.modulus)

    def _body(self, ops: list[int] | tuple[int, ...]) -> str:
        return "+".join(str(x) for x in ops) + f"%{self.modulus}"

    def _canonical_body(self, body: str) -> str:
        terms, _, mod = body.partition("%")
        return f"{_sorted_operands(terms, '+')}%{mod}"

    def _space_bound(self, difficulty: int) -> int:
        return self.modulus**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for ops in itertools.product(range(self.modulus), repeat=difficulty):
            yield self._body(ops), str(sum(ops) % self.modulus)

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        # all 1-digit operands (answer "0" for all zeros) .. all 2-digit (answer 2 digits)
        return 2 * difficulty - 1 + 3 + 1, 3 * difficulty - 1 + 3 + 2


class _TwoOperandTask(Task):
    """A binary operation on two operands of exactly `difficulty` digits each: ``<a><symbol><b>``
    -> ``apply(a, b)``; the two operand orders form one equivalence class."""

    symbol: str
    twin_class = "operand order"

    @staticmethod
    def apply(a: int, b: int) -> int:
        raise NotImplementedError

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        a, b = number(rng, difficulty), number(rng, difficulty)
        return f"{a}{self.symbol}{b}", str(self.apply(a, b))

    def _canonical_body(self, body: str) -> str:
        return _sorted_operands(body, self.symbol)

    def _space_bound(self, difficulty: int) -> int:
        return 100**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for a, b in _pairs(difficulty):
            yield f"{a}{self.symbol}{b}", str(self.apply(a, b))


class AdditionTask(_TwoOperandTask):
    """Integer addition. Difficulty = digits of each operand.

    Format: ``add 123+456=`` -> ``579``. Both operands have exactly `difficulty` digits, so the
    prompt length grows with the difficulty and every OOD prompt (5+ digits: at least 16
    characters after the tag) is longer than every training one (4 digits: at most 14).
    Equivalence class: the two operand orders (``add 18+51=`` ~ ``add 51+18=``).
    """

    name, tag, difficulty_name = "addition", "add", "digits"
    train_range, ood_values = (1, 4), (5, 6, 8)
    description = "sum of two non-negative integers"
    symbol = "+"

    @staticmethod
    def apply(a: int, b: int) -> int:
        return a + b

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        # shortest: 10..0+10..0 (sum d digits; 0+0=0 at d=1); longest: 9..9+9..9 (d+1 digits)
        d = difficulty
        return 2 * d + 1 + d, 2 * d + 1 + d + 1


class MultiplicationTask(_TwoOperandTask):
    """Integer multiplication. Difficulty = digits of each operand.

    Format: ``mul 12*34=`` -> ``408``. Both operands have exactly `difficulty` digits, so every
    OOD example (4+ digits: ``mul 1000*1000=1000000``, 16 characters after the tag) is longer
    than every training one (3 digits: ``mul 999*999=998001``, 13).
    Equivalence class: the two operand orders (``mul 17*31=`` ~ ``mul 31*17=``).
    """

    name, tag, difficulty_name = "multiplication", "mul", "digits"
    train_range, ood_values = (1, 3), (4, 5)
    description = "product of two non-negative integers"
    symbol = "*"

    @staticmethod
    def apply(a: int, b: int) -> int:
        return a * b

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        d = difficulty  # 10..0*10..0 (2d - 1 digits; 0*0=0 at d=1) .. 9..9*9..9 (2d digits)
        return 2 * d + 1 + (1 if d == 1 else 2 * d - 1), 2 * d + 1 + 2 * d


def _chain_value(first: int, steps: list[tuple[str, int]]) -> int:
    value = first
    for op, x in steps:
        value = value + x if op == "+" else value - x if op == "-" else value * x
    return value


class ChainTask(Task):
    """Left-to-right arithmetic on single digits. Difficulty = number of operations.

    Format: ``chain 3+4-2*1=`` -> ``5``: operators ``+ - *`` are applied strictly left to right
    with no precedence, i.e. ((3+4)-2)*1. The answer may be negative (``-12``).
    Equivalence class: reorderings that cannot change the value for any running value —
    the steps inside each maximal run of additive (``+``/``-``) or multiplicative (``*``)
    operations, and, in the first run, the leading digit with the ``+`` (or ``*``) operands
    (``3+4-2*1*5`` ~ ``4-2+3*5*1``).
    """

    name, tag, difficulty_name = "chain", "chain", "operations"
    train_range, ood_values = (1, 4), (7, 8)
    description = "single digits with + - * evaluated left to right (no precedence)"
    twin_class = "order inside +/- and * runs"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        first = rng.randint(0, 9)
        steps = []
        for _ in range(difficulty):
            steps.append((rng.choice("+-*"), rng.randint(0, 9)))
        return self._body(first, steps), str(_chain_value(first, steps))

    @staticmethod
    def _body(first: int, steps: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> str:
        return str(first) + "".join(f"{op}{x}" for op, x in steps)

    def _canonical_body(self, body: str) -> str:
        first = int(body[0])
        steps = [(body[i], int(body[i + 1])) for i in range(1, len(body) - 1, 2)]
        runs = [list(g) for _, g in itertools.groupby(steps, key=lambda s: s[0] == "*")]
        out = []
        for i, run in enumerate(runs):
            if i == 0:  # the leading digit commutes with the first run's + or * operands
                op = "*" if run[0][0] == "*" else "+"
                same = sorted([first] + [x for o, x in run if o == op])
                first, run = same[0], [(op, x) for x in same[1:]] + [s for s in run if s[0] != op]
            out += sorted(run)
        return self._body(first, out)

    def _space_bound(self, difficulty: int) -> int:
        return 10 * 30**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        step_choices = [(op, x) for op in "+-*" for x in range(10)]
        for first in range(10):
            for steps in itertools.product(step_choices, repeat=difficulty):
                yield self._body(first, steps), str(_chain_value(first, list(steps)))

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        # The reachable values form a set whose extremes come from the previous extremes with
        # digit 0 or 9 (each step is monotone in the running value), so they are exact.
        lo, hi = 0, 9
        for _ in range(difficulty):
            cands = [f(v, x) for v in (lo, hi) for x in (0, 9)
                     for f in (lambda v, x: v + x, lambda v, x: v - x, lambda v, x: v * x)]
            lo, hi = min(cands), max(cands)
        longest = max(len(str(lo)), len(str(hi)))
        return 2 * difficulty + 1 + 1, 2 * difficulty + 1 + longest  # answer "0" .. extreme


class CompareTask(Task):
    """Compare two integers. Difficulty = digits of the longer operand.

    Format: ``cmp 123,45=`` -> ``>`` (answer ``<``, ``>`` or ``=``). A third of examples are
    equal pairs, a third have the same length and differ at one random digit position (so a
    shared prefix must be scanned), and a third have different lengths (random which is longer).
    Equivalence class: the mirrored pair (``cmp 45,123=`` ~ ``cmp 123,45=``, answer flipped).
    """

    name, tag, difficulty_name = "compare", "cmp", "digits"
    train_range, ood_values = (1, 4), (8, 10)
    description = "compare two integers: <, > or ="
    twin_class = "mirrored pair (answer flipped)"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        a = number(rng, difficulty)
        mode = rng.randrange(3)
        if mode == 2 and difficulty == 1:
            mode = 1  # no shorter length exists
        if mode == 0:
            b = a
        elif mode == 1:
            digits = list(str(a))
            pos = rng.randrange(difficulty)
            low = 1 if pos == 0 and difficulty > 1 else 0
            choices = [str(d) for d in range(low, 10) if str(d) != digits[pos]]
            digits[pos] = rng.choice(choices)
            b = int("".join(digits))
        else:
            b = number(rng, rng.randint(1, difficulty - 1))
        if rng.random() < 0.5:
            a, b = b, a
        return f"{a},{b}", self._answer(a, b)

    @staticmethod
    def _answer(a: int, b: int) -> str:
        return "<" if a < b else (">" if a > b else "=")

    def _canonical_body(self, body: str) -> str:
        return _sorted_operands(body, ",")

    def _space_bound(self, difficulty: int) -> int:
        return 100**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for a, b in _pairs_longer(difficulty):
            sa, sb = str(a), str(b)
            if len(sa) != len(sb) or sum(x != y for x, y in zip(sa, sb)) <= 1:
                yield f"{a},{b}", self._answer(a, b)

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        d = difficulty
        return (4 if d == 1 else d + 3), 2 * d + 2  # d digits vs 1 digit .. two d-digit numbers


class SuccessorTask(Task):
    """Add one to an integer. Difficulty = number of digits.

    Format: ``succ 199=`` -> ``200``. Half the examples end in a random run of 9s (1..all
    digits), so long carry chains, including 99..9 -> 100..0, are common.
    Equivalence class: the prompt alone (one operand, no reordering exists).
    """

    name, tag, difficulty_name = "successor", "succ", "digits"
    train_range, ood_values = (1, 4), (6, 8)
    description = "n + 1, with long carry chains common"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        n = number(rng, difficulty)
        if rng.random() < 0.5:
            nines = rng.randint(1, difficulty)
            n = (n // 10**nines) * 10**nines + (10**nines - 1)
        return str(n), str(n + 1)

    def _space_bound(self, difficulty: int) -> int:
        return 10**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for n in range(lowest(difficulty), 10**difficulty):
            yield str(n), str(n + 1)

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        return 2 * difficulty, 2 * difficulty + 1  # n+1 gains a digit only for 9..9
