"""String tasks: parity, copy, reverse, dyck (see `unified.data.tasks` for the registry and
`unified.data.task_base` for the contract).

Equivalence classes ("trivial twins") are prompts that show the same inputs, so that a
memorised association answers both; each docstring names its class and why it is that small.
"""
from __future__ import annotations

import itertools
import math
import random
import string
from typing import Iterator

from unified.data.task_base import Task


class ParityTask(Task):
    """Parity of a bit string. Difficulty = number of bits.

    Format: ``parity 10110=`` -> ``1`` (``1`` when the count of ones is odd, else ``0``).
    Equivalence class: the prompt alone. Permuted bit strings share the answer, but grouping
    them would group by the count of ones — the very quantity the task asks for — and leave a
    handful of classes per length; they are different inputs, not twins.
    """

    name, tag, difficulty_name = "parity", "parity", "length"
    train_range, ood_values = (2, 8), (12, 16, 32, 64)
    description = "parity of a bit string (1 = odd number of ones)"

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        bits = [rng.randint(0, 1) for _ in range(difficulty)]
        return "".join(str(b) for b in bits), str(sum(bits) % 2)

    def _space_bound(self, difficulty: int) -> int:
        return 2**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for bits in itertools.product("01", repeat=difficulty):
            yield "".join(bits), str(bits.count("1") % 2)

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        return difficulty + 1, difficulty + 1


class _LetterTask(Task):
    """Shared sampling and enumeration of lowercase strings of length `difficulty`."""

    def _transform(self, s: str) -> str:
        raise NotImplementedError

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        s = "".join(rng.choice(string.ascii_lowercase) for _ in range(difficulty))
        return s, self._transform(s)

    def _space_bound(self, difficulty: int) -> int:
        return 26**difficulty

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for letters in itertools.product(string.ascii_lowercase, repeat=difficulty):
            s = "".join(letters)
            yield s, self._transform(s)

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        return 2 * difficulty, 2 * difficulty


class CopyTask(_LetterTask):
    """Copy a string of lowercase letters. Difficulty = string length.

    Format: ``copy abcde=`` -> ``abcde``.
    Equivalence class: the prompt alone (renaming letters gives another input, not a twin).
    """

    name, tag, difficulty_name = "copy", "copy", "length"
    train_range, ood_values = (1, 8), (12, 16, 32)
    description = "repeat a lowercase string"

    def _transform(self, s: str) -> str:
        return s


class ReverseTask(_LetterTask):
    """Reverse a string of lowercase letters. Difficulty = string length.

    Format: ``rev abcde=`` -> ``edcba``.
    Equivalence class: a string and its reversal (``rev abc=`` ~ ``rev cba=``): each one's
    answer is the other's prompt, so training on one shows the other's answer verbatim.
    """

    name, tag, difficulty_name = "reverse", "rev", "length"
    train_range, ood_values = (1, 8), (12, 16, 32)
    description = "reverse a lowercase string"
    twin_class = "string and its reversal"

    def _transform(self, s: str) -> str:
        return s[::-1]

    def _canonical_body(self, body: str) -> str:
        return min(body, body[::-1])


_PAIRS = {")": "(", "]": "["}
_OPEN_OF = {"(": ")", "[": "]"}
_RETYPE = {"(": "[", "[": "(", ")": "]", "]": ")"}
_FLIP = {"(": ")", ")": "(", "[": "]", "]": "["}


def is_balanced(s: str) -> bool:
    """Whether `s` (over the characters ``()[]``) is a well-nested, fully closed bracket string."""
    stack: list[str] = []
    for ch in s:
        if ch in _OPEN_OF:
            stack.append(ch)
        elif not stack or stack.pop() != _PAIRS[ch]:
            return False
    return not stack


def _all_balanced(pairs: int) -> Iterator[str]:
    """Every balanced two-type bracket string with `pairs` pairs: s = open A close B."""
    if pairs == 0:
        yield ""
        return
    for inner in range(pairs):
        for a in _all_balanced(inner):
            for b in _all_balanced(pairs - 1 - inner):
                for o in "([":
                    yield o + a + _OPEN_OF[o] + b


class DyckTask(Task):
    """Is a two-type bracket string balanced? Difficulty = number of bracket pairs.

    Format: ``dyck ([])()=`` -> ``1``; the string has 2 * difficulty characters (train lengths
    2..12, OOD lengths 16, 24, 32). Difficulty counts pairs rather than characters so that every
    difficulty has both balanced and unbalanced strings of the same length. Half the examples are
    a random balanced string; the other half take a balanced string and apply one small edit
    (swap two adjacent characters, change one bracket's type, or flip one bracket's direction),
    so unbalanced strings look almost right. The label always comes from `is_balanced`.
    Equivalence class: the prompt alone. Mirroring or swapping bracket types keeps the label
    but yields a different string that must be read again; these are inputs, not twins.
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
            s[i] = _RETYPE[s[i]]
        else:  # flip the direction of one bracket, keeping its type
            i = rng.randrange(len(s))
            s[i] = _FLIP[s[i]]
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

    def _space_bound(self, difficulty: int) -> int:
        balanced = math.comb(2 * difficulty, difficulty) // (difficulty + 1) * 2**difficulty
        return balanced * (1 + 3 * 2 * difficulty)  # each string and its single edits

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for s in _all_balanced(difficulty):
            yield s, "1"
            for i in range(len(s)):
                for edited in (_RETYPE[s[i]], _FLIP[s[i]]):
                    t = s[:i] + edited + s[i + 1:]
                    if not is_balanced(t):
                        yield t, "0"
                if i + 1 < len(s) and s[i] != s[i + 1]:
                    t = s[:i] + s[i + 1] + s[i] + s[i + 2:]
                    if not is_balanced(t):
                        yield t, "0"

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        return 2 * difficulty + 1, 2 * difficulty + 1
