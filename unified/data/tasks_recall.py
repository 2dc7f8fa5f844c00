"""Recall tasks: multi-query associative recall (see `unified.data.tasks` for the registry and
`unified.data.task_base` for the contract)."""
from __future__ import annotations

import itertools
import math
import random
import string
from typing import Iterator

from unified.data.task_base import Task

_KEYS = string.ascii_lowercase
_VALUES = string.digits


class MQARTask(Task):
    """Multi-query associative recall (Arora et al. 2023, "Zoology: Measuring and Improving Recall
    in Efficient Language Models"). Difficulty = number of key-value pairs (1..26).

    Format: ``mqar a3k7z0?kaz=`` -> ``703``: distinct lowercase keys each followed by a digit
    value, then ``?`` and every key once, in random order; the answer is the queried keys' values
    in query order. The model must hold every pair until its query comes, so the state a
    recurrent model needs grows with the number of pairs, while attention can look back.
    Equivalence class: the same pairs in another order with the same queries (``a3k7?ka=`` ~
    ``k7a3?ka=``): the same facts and the same answer. Renaming keys or permuting the queries
    changes the input or the answer, so those are different examples.
    """

    name, tag, difficulty_name = "mqar", "mqar", "pairs"
    train_range, ood_values = (1, 8), (12, 16, 24)
    description = "key-value pairs, then every key queried once: answer their values in order"
    twin_class = "pairs reordered, same queries"

    def _check_difficulty(self, difficulty: int) -> None:
        super()._check_difficulty(difficulty)
        if difficulty > len(_KEYS):
            from unified.errors import ConfigError

            raise ConfigError(f"task 'mqar': at most {len(_KEYS)} pairs (one per lowercase key), got {difficulty}")

    def _generate(self, rng: random.Random, difficulty: int) -> tuple[str, str]:
        keys = rng.sample(_KEYS, difficulty)
        values = [rng.choice(_VALUES) for _ in keys]
        queries = rng.sample(keys, difficulty)
        return self._body(keys, values, queries)

    @staticmethod
    def _body(keys, values, queries) -> tuple[str, str]:
        table = dict(zip(keys, values))
        pairs = "".join(k + v for k, v in zip(keys, values))
        return f"{pairs}?{''.join(queries)}", "".join(table[q] for q in queries)

    def _canonical_body(self, body: str) -> str:
        pairs, sep, queries = body.partition("?")
        if not sep or len(pairs) % 2:
            return body
        chunks = sorted(pairs[i:i + 2] for i in range(0, len(pairs), 2))
        return "".join(chunks) + sep + queries

    def _space_bound(self, difficulty: int) -> int:
        return math.perm(len(_KEYS), difficulty) * len(_VALUES) ** difficulty * math.factorial(difficulty)

    def _bodies(self, difficulty: int) -> Iterator[tuple[str, str]]:
        for keys in itertools.permutations(_KEYS, difficulty):
            for values in itertools.product(_VALUES, repeat=difficulty):
                for queries in itertools.permutations(keys):
                    yield self._body(keys, values, queries)

    def _body_answer_bounds(self, difficulty: int) -> tuple[int, int]:
        n = 4 * difficulty + 1  # pairs (2 per pair) + "?" + queries + answer digits
        return n, n
