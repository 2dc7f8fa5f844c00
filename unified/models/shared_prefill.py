"""Prefill prompts that share prefixes, each shared piece once (a prefix tree over the prompts).

Needle prompts of one context length share a great deal: every prompt starts with BOS, and the
prompts of one haystack at different needle depths share the haystack up to the shallower
needle. `prefill_shared` walks the prefix tree of the prompts: each edge (a run of tokens that
a set of prompts has in common after their shared ancestors) is run once through a cache of
batch 1, and the cache is copied (`cache_rows.take_rows`) where prompts part. The result per
prompt is what one prefill of the whole prompt gives (its cache and its last-position logits,
equal up to float rounding, as the cache-equivalence property tests check for every variant),
plus the compute steps its positions took for variants that report `last_steps`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from unified.models.base import LanguageModel
from unified.models.cache_rows import take_rows


@dataclass
class Prefilled:
    """One prompt after its prefill: cache (batch 1), last-position logits (1, V), and the
    compute steps summed over its positions / over its last position (0 when not reported)."""

    cache: Any
    logits: torch.Tensor
    steps: float = 0.0
    positions: int = 0
    last_steps: float = 0.0
    reported: bool = False  # the variant reports `last_steps`


@torch.no_grad()
def prefill_shared(model: LanguageModel, prompts: Sequence[Sequence[int]]) -> list[Prefilled]:
    """Prefill equal-length `prompts`, each shared prefix once; one `Prefilled` per prompt
    (identical prompts share one object: copy its cache before decoding from it)."""
    if not prompts:
        return []
    arr = np.asarray([list(p) for p in prompts], dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError("prefill_shared: prompts must be non-empty and of equal length")
    device = next(model.parameters()).device
    out: list[Prefilled | None] = [None] * len(prompts)
    # an explicit stack instead of recursion: (rows, start, cache, state so far)
    todo: list[tuple[np.ndarray, int, Any, Prefilled | None]] = [(np.arange(len(prompts)), 0, model.init_cache(1),
                                                                  None)]
    while todo:
        rows, start, cache, state = todo.pop()
        same = (arr[rows, start:] == arr[rows[0], start:]).all(axis=0)
        stop = start + (int(np.argmin(same)) if not same.all() else len(same))  # end of the common run
        if stop > start:
            res = model(torch.as_tensor(arr[rows[:1], start:stop], device=device), cache=cache)
            state = _advance(model, state, res.cache, res.logits[:, -1])
        assert state is not None  # the root always runs (prompts share at least their first token or part)
        if stop == arr.shape[1]:
            for r in rows:
                out[r] = state
            continue
        parts = [rows[arr[rows, stop] == t] for t in dict.fromkeys(arr[rows, stop].tolist())]
        for j, part in enumerate(parts):  # the last part continues in the cache itself, the others in copies
            branch = state.cache if j == len(parts) - 1 else take_rows(state.cache, [0], 1)
            todo.append((part, stop, branch, Prefilled(branch, state.logits, state.steps, state.positions,
                                                       state.last_steps, state.reported)))
    return out  # type: ignore[return-value]


def _advance(model: LanguageModel, state: Prefilled | None, cache: Any, logits: torch.Tensor) -> Prefilled:
    """The prefill state after one more forward (its cache and logits, steps accumulated)."""
    new = Prefilled(cache, logits) if state is None else Prefilled(cache, logits, state.steps, state.positions,
                                                                   state.last_steps, state.reported)
    last = getattr(model, "last_steps", None)
    if last is not None:
        last = last.detach().float().cpu()
        new.steps += float(last.sum())
        new.positions += last.shape[1]
        new.last_steps, new.reported = float(last[0, -1]), True
    return new
