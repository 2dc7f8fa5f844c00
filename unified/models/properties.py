"""Property checks of a language model (docs/design.md#contract-1), shared by tests/test_properties.py
(every variant, tiny, CPU) and bench/gpu_check.py (every variant on CUDA, fp32 and bf16 autocast).

- causality: changing the tokens after position t changes no logit at positions <= t, and
  changing one batch row changes no other row;
- cache equivalence: a full forward pass equals prefill + chunked + step-by-step decoding with
  the model's cache.
The functions return the measured differences; callers choose the tolerance (float32 on CPU
is exact to ~1e-6, bf16 autocast on a GPU is not)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Sequence

import torch

Context = Callable[[], contextlib.AbstractContextManager]


def perturb_after(ids: torch.Tensor, t: int, vocab_size: int) -> torch.Tensor:
    """A copy of ids (b, T) whose tokens after position t all differ from the originals."""
    T = ids.shape[1]
    changed = ids.clone()
    shift = 1 + torch.arange(T - t - 1, device=ids.device)
    changed[:, t + 1:] = (changed[:, t + 1:] + shift) % vocab_size
    return changed


@torch.no_grad()
def causality_diffs(model: Any, ids: torch.Tensor, cuts: Iterable[int], seed: int = 1,
                    context: Context = contextlib.nullcontext) -> dict[str, Any]:
    """Max |logit change| at positions <= t ("past", per cut t: must be 0) and at positions > t
    ("future", per cut: must be > 0, else the check changed nothing) when the tokens after t
    change, and in row 0 when row 1 changes ("rows": must be 0). The RNG is re-seeded with `seed`
    before every forward pass, so train-mode dropout draws the same masks."""
    vocab = model.cfg.vocab_size

    def logits(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(seed)
        with context():
            return model(x).logits.float()

    base = logits(ids)
    past, future = {}, {}
    for t in cuts:
        out = logits(perturb_after(ids, t, vocab))
        past[t] = (out[:, : t + 1] - base[:, : t + 1]).abs().max().item()
        future[t] = (out[:, t + 1:] - base[:, t + 1:]).abs().max().item()
    other = ids.clone()
    other[1] = (other[1] + 3) % vocab
    rows = (logits(other)[0] - base[0]).abs().max().item()
    return {"past": past, "future": future, "rows": rows, "scale": base.abs().max().item()}


@torch.no_grad()
def cached_logits(model: Any, ids: torch.Tensor, splits: Sequence[int],
                  context: Context = contextlib.nullcontext) -> torch.Tensor:
    """Logits of ids (b, T) computed piece by piece through the cache: ids[:, a:b] for
    consecutive (a, b) in `splits` (e.g. [0, 9, 10, 11, ..., T]: a prefill, then steps)."""
    cache = model.init_cache(ids.shape[0])
    parts = []
    for a, b in zip(splits[:-1], splits[1:]):
        with context():
            out = model(ids[:, a:b], cache=cache)
        cache = out.cache
        parts.append(out.logits.float())
    return torch.cat(parts, dim=1)


def default_splits(T: int) -> list[list[int]]:
    """Step by step from the start; a 9-token prefill then steps; uneven chunks."""
    return [[0] + list(range(1, T + 1)), [0, 9] + list(range(10, T + 1)),
            [0, T // 8, T // 2 - 3, T // 2 - 2, (4 * T) // 5 + 1, T]]


@torch.no_grad()
def cache_diffs(model: Any, ids: torch.Tensor, split_sets: Iterable[Sequence[int]] | None = None,
                context: Context = contextlib.nullcontext) -> dict[str, Any]:
    """Max |cached - full| logits per split set (keyed by its first pieces) and the logits' scale."""
    with context():
        full = model(ids).logits.float()
    diffs = {}
    for splits in split_sets or default_splits(ids.shape[1]):
        diffs[str(list(splits[:4]))] = (cached_logits(model, ids, splits, context) - full).abs().max().item()
    return {"diffs": diffs, "max": max(diffs.values()), "scale": full.abs().max().item()}
