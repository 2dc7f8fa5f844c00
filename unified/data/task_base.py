"""The `Task` base class and `Example`: what every procedural task provides.

A task turns a `random.Random` and an integer difficulty into an `Example` (`sample`). Beyond
sampling, a task describes its prompt space exactly, because the evaluation cells and the
train/val/eval split depend on it:

- `canonical_prompt` maps a prompt to the canonical member of its *equivalence class* (prompts
  that are trivial twins, e.g. ``add 8+51=`` and ``add 51+8=``). The split hashes this key, so
  twins always land in the same split (`unified.data.batches.prompt_split`).
- `enumerate` lists every prompt the generator can produce at a difficulty when that space is
  small (parity of 3 bits, 1-digit successors ...), so held-out cells can take all of them
  instead of rejection sampling.
- `char_bounds` gives the exact shortest and longest ``len(prompt) + len(answer)`` the generator
  can produce at a difficulty; with the byte tokenizer the token length is that plus BOS and EOS,
  which is how the default OOD grids are checked to lie beyond every training length.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Iterator

from unified.errors import ConfigError

# Prompt spaces up to this size are enumerated rather than sampled (`Task.enumerate`).
ENUMERATE_CAP = 20_000


@dataclass(frozen=True)
class Example:
    """One task instance: the model reads `prompt` and must produce exactly `answer`."""

    prompt: str  # ends with "="
    answer: str  # no trailing EOS/newline
    meta: dict = field(default_factory=dict)  # at least {"task", "difficulty", "ood"}


def number(rng: random.Random, digits: int) -> int:
    """A uniform integer with exactly `digits` decimal digits (0..9 when `digits` is 1)."""
    if digits == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def lowest(digits: int) -> int:
    """The smallest integer with exactly `digits` digits (0 for one digit, as in `number`)."""
    return 0 if digits == 1 else 10 ** (digits - 1)


class Task:
    """Base class: subclasses set the class attributes and implement `_generate`, `_bodies`,
    `_space_bound` and `_body_answer_bounds` (and `_canonical_body` when they have twins)."""

    name: str = ""
    difficulty_name: str = ""
    train_range: tuple[int, int] = (1, 1)
    ood_values: tuple[int, ...] = ()
    description: str = ""
    tag: str = ""
    twin_class: str = "prompt alone"  # one-line name of the equivalence class (docs/data.md table)

    # ---- sampling ------------------------------------------------------------------------
    def sample(self, rng: random.Random, difficulty: int) -> Example:
        """Draw one example at `difficulty` (any int >= 1, inside or outside the train range)."""
        self._check_difficulty(difficulty)
        return self.make(*self._generate(rng, difficulty), difficulty)

    def make(self, body: str, answer: str, difficulty: int) -> Example:
        """The Example for a prompt body (without tag and "=") and its answer at `difficulty`."""
        meta = {"task": self.name, "difficulty": difficulty, "ood": difficulty > self.train_range[1]}
        return Example(prompt=f"{self.tag} {body}=", answer=answer, meta=meta)

    def _check_difficulty(self, difficulty: int) -> None:
        if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
            raise ConfigError(
                f"task {self.name!r}: difficulty ({self.difficulty_name}) must be an integer >= 1, "
                f"got {difficulty!r}"
            )

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        """Return (prompt body without tag and "=", answer). Implemented by each task."""
        raise NotImplementedError

    # ---- scoring ---------------------------------------------------------------------------
    def check(self, prediction: str, answer: str) -> bool:
        """Strict exact match: the decoded prediction must equal the answer character for
        character (no stripping, no whitespace forgiveness, no partial credit)."""
        return prediction == answer

    # ---- equivalence classes -------------------------------------------------------------
    def canonical_prompt(self, prompt: str) -> str:
        """The canonical member of `prompt`'s equivalence class (its trivial twins, documented
        in each task's docstring); the train/val/eval split is a hash of this key. A prompt
        that is not of this task's form is returned unchanged."""
        head = f"{self.tag} "
        if not (prompt.startswith(head) and prompt.endswith("=")):
            return prompt
        return f"{head}{self._canonical_body(prompt[len(head):-1])}="

    def _canonical_body(self, body: str) -> str:
        """Canonical body of the class; the identity for tasks without twins."""
        return body

    # ---- the prompt space ------------------------------------------------------------------
    def enumerate(self, difficulty: int, cap: int = ENUMERATE_CAP) -> list[Example] | None:
        """Every distinct example the generator can produce at `difficulty`, in a fixed order,
        or None when that space has more than `cap` prompts (then sample instead)."""
        self._check_difficulty(difficulty)
        if self._space_bound(difficulty) > cap:
            return None
        out: dict[str, Example] = {}
        for body, answer in itertools.islice(self._bodies(difficulty), cap + 1):
            out.setdefault(body, self.make(body, answer, difficulty))
        return list(out.values()) if len(out) <= cap else None

    def _space_bound(self, difficulty: int) -> int:
        """An upper bound on the number of distinct prompts at `difficulty` (cheap)."""
        raise NotImplementedError

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        """Every (body, answer) in the generator's support at `difficulty` (repeats allowed)."""
        raise NotImplementedError

    def char_bounds(self, difficulty: int) -> tuple[int, int]:
        """Exact (shortest, longest) ``len(prompt) + len(answer)`` over every example the
        generator can produce at `difficulty` (the tag, space and "=" included)."""
        self._check_difficulty(difficulty)
        lo, hi = self._body_answer_bounds(difficulty)
        extra = len(self.tag) + 2
        return lo + extra, hi + extra

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        """Exact (min, max) of len(body) + len(answer) at `difficulty`."""
        raise NotImplementedError

    # ---- curriculum ------------------------------------------------------------------------
    def train_difficulty(self, level: float) -> int:
        """Map a curriculum level in [0, 1] onto the train range: 0 -> min, 1 -> max, monotone.

        The range is cut into equal-width bins, one per difficulty, so every value is reachable.
        """
        level = float(level)
        if not (0.0 <= level <= 1.0):  # also rejects NaN
            raise ConfigError(f"curriculum level must lie in [0, 1], got {level!r}")
        lo, hi = self.train_range
        return lo + min(hi - lo, math.floor(level * (hi - lo + 1)))
