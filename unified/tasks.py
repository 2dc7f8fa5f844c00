"""Procedural algorithmic tasks with exact answers, for length/size generalisation tests.

Each task turns a `random.Random` and an integer difficulty into an `Example`: a short prompt
ending in "=" and the exact answer text. Prompts are plain ASCII meant to be tokenised one byte
per character, and start with a short tag naming the task. Answers are computed with Python ints
or direct algorithms (a bracket stack, a left-to-right fold), never by reformatting the prompt.

Every task has a training range of difficulties and a few larger out-of-distribution (OOD)
difficulties; `sample` accepts any difficulty >= 1, so the OOD values are sampled the same way.
All randomness comes from the `rng` argument, so a seed fixes the stream on every machine and
under every PYTHONHASHSEED.
"""
from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass, field
from typing import Sequence

from unified.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Example:
    """One task instance: the model reads `prompt` and must produce exactly `answer`."""

    prompt: str  # ends with "="
    answer: str  # no trailing EOS/newline
    meta: dict = field(default_factory=dict)  # at least {"task": name, "difficulty": int}


def _number(rng: random.Random, digits: int) -> int:
    """A uniform integer with exactly `digits` decimal digits (0..9 when `digits` is 1)."""
    if digits == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


class Task:
    """Base class: subclasses set the class attributes and implement `_generate`."""

    name: str = ""
    difficulty_name: str = ""
    train_range: tuple[int, int] = (1, 1)
    ood_values: tuple[int, ...] = ()
    description: str = ""
    tag: str = ""

    def sample(self, rng: random.Random, difficulty: int) -> Example:
        """Draw one example at `difficulty` (any int >= 1, inside or outside the train range)."""
        if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
            raise ConfigError(
                f"task {self.name!r}: difficulty ({self.difficulty_name}) must be an integer >= 1, "
                f"got {difficulty!r}"
            )
        body, answer = self._generate(rng, difficulty)
        meta = {
            "task": self.name,
            "difficulty": difficulty,
            "ood": difficulty > self.train_range[1],
        }
        return Example(prompt=f"{self.tag} {body}=", answer=answer, meta=meta)

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        """Return (prompt body without tag and "=", answer). Implemented by each task."""
        raise NotImplementedError

    def check(self, prediction: str, answer: str) -> bool:
        """Exact match after stripping surrounding whitespace; no partial credit."""
        return prediction.strip() == answer.strip()

    def train_difficulty(self, level: float) -> int:
        """Map a curriculum level in [0, 1] onto the train range: 0 -> min, 1 -> max, monotone.

        The range is cut into equal-width bins, one per difficulty, so every value is reachable.
        """
        level = float(level)
        if not (0.0 <= level <= 1.0):  # also rejects NaN
            raise ConfigError(f"curriculum level must lie in [0, 1], got {level!r}")
        lo, hi = self.train_range
        return lo + min(hi - lo, math.floor(level * (hi - lo + 1)))


class ModAddTask(Task):
    """Sum of residues modulo 97. Difficulty = number of operands, each uniform in 0..96.

    Format: ``modadd 37+85%97=`` -> ``25``. The modulus is fixed and shown so the prompt is
    self-describing; the answer is ``sum(operands) % 97`` in decimal.
    """

    name, tag, difficulty_name = "mod_add", "modadd", "operands"
    train_range, ood_values = (2, 3), (4, 6)
    description = "sum of residues modulo 97"
    modulus = 97

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        ops = [rng.randrange(self.modulus) for _ in range(difficulty)]
        body = "+".join(str(x) for x in ops) + f"%{self.modulus}"
        return body, str(sum(ops) % self.modulus)


class ParityTask(Task):
    """Parity of a bit string. Difficulty = number of bits.

    Format: ``parity 10110=`` -> ``1`` (``1`` when the count of ones is odd, else ``0``).
    """

    name, tag, difficulty_name = "parity", "parity", "length"
    train_range, ood_values = (2, 8), (12, 16, 32)
    description = "parity of a bit string (1 = odd number of ones)"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        bits = [rng.randint(0, 1) for _ in range(difficulty)]
        return "".join(str(b) for b in bits), str(sum(bits) % 2)


class AdditionTask(Task):
    """Integer addition. Difficulty = digits of the longer operand.

    Format: ``add 123+45=`` -> ``168``. One operand has exactly `difficulty` digits, the other
    1..difficulty digits; which side is longer is random.
    """

    name, tag, difficulty_name = "addition", "add", "digits"
    train_range, ood_values = (1, 4), (5, 6, 8)
    description = "sum of two non-negative integers"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        a, b = _number(rng, difficulty), _number(rng, rng.randint(1, difficulty))
        if rng.random() < 0.5:
            a, b = b, a
        return f"{a}+{b}", str(a + b)


class MultiplicationTask(Task):
    """Integer multiplication. Difficulty = digits of the longer operand.

    Format: ``mul 12*34=`` -> ``408``. One operand has exactly `difficulty` digits, the other
    1..difficulty digits; which side is longer is random.
    """

    name, tag, difficulty_name = "multiplication", "mul", "digits"
    train_range, ood_values = (1, 3), (4, 5)
    description = "product of two non-negative integers"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        a, b = _number(rng, difficulty), _number(rng, rng.randint(1, difficulty))
        if rng.random() < 0.5:
            a, b = b, a
        return f"{a}*{b}", str(a * b)


class CopyTask(Task):
    """Copy a string of lowercase letters. Difficulty = string length.

    Format: ``copy abcde=`` -> ``abcde``.
    """

    name, tag, difficulty_name = "copy", "copy", "length"
    train_range, ood_values = (1, 8), (12, 16, 32)
    description = "repeat a lowercase string"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        s = "".join(rng.choice(string.ascii_lowercase) for _ in range(difficulty))
        return s, s


class ReverseTask(Task):
    """Reverse a string of lowercase letters. Difficulty = string length.

    Format: ``rev abcde=`` -> ``edcba``.
    """

    name, tag, difficulty_name = "reverse", "rev", "length"
    train_range, ood_values = (1, 8), (12, 16, 32)
    description = "reverse a lowercase string"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        s = "".join(rng.choice(string.ascii_lowercase) for _ in range(difficulty))
        return s, s[::-1]


_PAIRS = {")": "(", "]": "["}
_OPEN_OF = {"(": ")", "[": "]"}


def is_balanced(s: str) -> bool:
    """Whether `s` (over the characters ``()[]``) is a well-nested, fully closed bracket string."""
    stack: list[str] = []
    for ch in s:
        if ch in _OPEN_OF:
            stack.append(ch)
        elif not stack or stack.pop() != _PAIRS[ch]:
            return False
    return not stack


class DyckTask(Task):
    """Is a two-type bracket string balanced? Difficulty = number of bracket pairs.

    Format: ``dyck ([])()=`` -> ``1``; the string has 2 * difficulty characters (train lengths
    2..12, OOD lengths 16, 24, 32). Difficulty counts pairs rather than characters so that every
    difficulty has both balanced and unbalanced strings of the same length. Half the examples are
    a random balanced string; the other half take a balanced string and apply one small edit
    (swap two adjacent characters, change one bracket's type, or flip one bracket's direction),
    so unbalanced strings look almost right. The label always comes from `is_balanced`.
    """

    name, tag, difficulty_name = "dyck", "dyck", "pairs"
    train_range, ood_values = (1, 6), (8, 12, 16)
    description = "is a ()[] string balanced (1/0); length = 2 x pairs"

    @staticmethod
    def _balanced(rng: random.Random, pairs: int) -> list[str]:
        """A random balanced string: open while allowed with probability 1/2, else close."""
        out: list[str] = []
        stack: list[str] = []
        opens_left = pairs
        while opens_left or stack:
            if opens_left and (not stack or rng.random() < 0.5):
                ch = rng.choice("([")
                stack.append(ch)
                out.append(ch)
                opens_left -= 1
            else:
                out.append(_OPEN_OF[stack.pop()])
        return out

    @staticmethod
    def _corrupt(rng: random.Random, chars: list[str]) -> list[str]:
        """One small edit of a balanced string; may (rarely, for swaps) stay balanced."""
        s = list(chars)
        kind = rng.randrange(3)
        if kind == 0:  # swap two adjacent, different characters
            spots = [i for i in range(len(s) - 1) if s[i] != s[i + 1]]
            i = rng.choice(spots)
            s[i], s[i + 1] = s[i + 1], s[i]
        elif kind == 1:  # change the type of one bracket, keeping its direction
            i = rng.randrange(len(s))
            s[i] = {"(": "[", "[": "(", ")": "]", "]": ")"}[s[i]]
        else:  # flip the direction of one bracket, keeping its type
            i = rng.randrange(len(s))
            s[i] = {"(": ")", ")": "(", "[": "]", "]": "["}[s[i]]
        return s

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        chars = self._balanced(rng, difficulty)
        if rng.random() < 0.5:
            for _ in range(100):
                candidate = self._corrupt(rng, chars)
                if not is_balanced("".join(candidate)):
                    chars = candidate
                    break
        s = "".join(chars)
        return s, "1" if is_balanced(s) else "0"


class ChainTask(Task):
    """Left-to-right arithmetic on single digits. Difficulty = number of operations.

    Format: ``chain 3+4-2*1=`` -> ``5``: operators ``+ - *`` are applied strictly left to right
    with no precedence, i.e. ((3+4)-2)*1. The answer may be negative (``-12``).
    """

    name, tag, difficulty_name = "chain", "chain", "operations"
    train_range, ood_values = (1, 4), (6, 8)
    description = "single digits with + - * evaluated left to right (no precedence)"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        value = rng.randint(0, 9)
        parts = [str(value)]
        for _ in range(difficulty):
            op, x = rng.choice("+-*"), rng.randint(0, 9)
            if op == "+":
                value += x
            elif op == "-":
                value -= x
            else:
                value *= x
            parts.append(f"{op}{x}")
        return "".join(parts), str(value)


class CompareTask(Task):
    """Compare two integers. Difficulty = digits of the longer operand.

    Format: ``cmp 123,45=`` -> ``>`` (answer ``<``, ``>`` or ``=``). A third of examples are
    equal pairs, a third have the same length and differ at one random digit position (so a
    shared prefix must be scanned), and a third have different lengths (random which is longer).
    """

    name, tag, difficulty_name = "compare", "cmp", "digits"
    train_range, ood_values = (1, 4), (6, 8)
    description = "compare two integers: <, > or ="

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        a = _number(rng, difficulty)
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
            b = _number(rng, rng.randint(1, difficulty - 1))
        if rng.random() < 0.5:
            a, b = b, a
        answer = "<" if a < b else (">" if a > b else "=")
        return f"{a},{b}", answer


class SuccessorTask(Task):
    """Add one to an integer. Difficulty = number of digits.

    Format: ``succ 199=`` -> ``200``. Half the examples end in a random run of 9s (1..all
    digits), so long carry chains, including 99..9 -> 100..0, are common.
    """

    name, tag, difficulty_name = "successor", "succ", "digits"
    train_range, ood_values = (1, 4), (6, 8)
    description = "n + 1, with long carry chains common"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        n = _number(rng, difficulty)
        if rng.random() < 0.5:
            nines = rng.randint(1, difficulty)
            n = (n // 10**nines) * 10**nines + (10**nines - 1)
        return str(n), str(n + 1)


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
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


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

    The example is taken at the top of the train range so the README shows a typical prompt.
    """
    rows = [
        "| task | difficulty | train range | OOD values | example (prompt -> answer) |",
        "|---|---|---|---|---|",
    ]
    for task in TASKS.values():
        lo, hi = task.train_range
        ex = task.sample(random.Random(0), hi)
        ood = ", ".join(str(v) for v in task.ood_values)
        rows.append(
            f"| {task.name} | {task.difficulty_name} | {lo}..{hi} | {ood} | "
            f"`{ex.prompt}` -> `{ex.answer}` |"
        )
    return "\n".join(rows) + "\n"
