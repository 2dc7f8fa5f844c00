"""The fast eval suites reproduce the straightforward implementation (issue 20, item 3).

tests/eval_reference.json holds, for a fixed tiny checkpoint of every variant
(tests/eval_reference.py), what the implementation before the speed-ups computed: the needle
payload and every needle row (prediction, steps), the algorithmic payload, greedy generations of
the algorithmic prompts and the perplexity window sums. Predictions, counts and exact match must
be identical; floats derived from them to 1e-9 relative; perplexity window NLLs to 1e-6 relative.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pytest

import eval_reference as ref

REFERENCE = json.loads(ref.REFERENCE.read_text())


def assert_same(got: Any, want: Any, rel: float, where: str = "") -> None:
    """Recursive equality: same keys, lengths, strings, ints and bools; floats to `rel`."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], rel, f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, rel, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} != {want!r}"
        if math.isnan(want):
            assert math.isnan(got), f"{where}: {got} != nan"
        else:
            assert got == pytest.approx(want, rel=rel, abs=1e-12), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_reference_exercises_early_stop() -> None:
    """The reference is a real check: for every variant but reservoir (see
    eval_reference.EOS_SCALE) some generations end on EOS and some run out of tokens, and
    generations end at many different steps."""
    end_steps = set()
    for variant, out in REFERENCE["variants"].items():
        ended = out["generate"]["ended"]
        end_steps |= {len(t) for t, e in zip(out["generate"]["tokens"], ended) if e}
        if variant != "reservoir":
            assert any(ended) and not all(ended), variant
    assert end_steps == set(range(9))


@pytest.mark.parametrize("variant", ref.VARIANTS)
def test_suites_reproduce_the_reference(variant: str) -> None:
    want = REFERENCE["variants"][variant]
    got = json.loads(json.dumps(ref.reference_outputs(variant)))  # tuples -> lists, as stored
    for key in ("needle", "needle_rows", "algorithmic", "generate"):
        assert_same(got[key], want[key], 1e-9, f"{variant}.{key}")
    assert_same(got["perplexity_windows"], want["perplexity_windows"], 1e-6, f"{variant}.perplexity")
