"""Row operations on decoding caches of any variant: keep some rows, repeat rows, stack caches.

A decoding cache (`model.init_cache(B)` after any forward) is a plain object holding tensors
whose first dimension is the batch (KV caches, SSM conv/scan states, recurrent states,
memories), positions and lengths (ints) and logging scalars (0-d tensors). These functions
rebuild such an object row-wise without knowing its class, so decoding can drop rows that have
finished (`take_rows`) and evaluation can branch one prefilled prefix into several prompts or
decode separately prefilled prompts as one batch (`stack_rows`). Anything they cannot map
with certainty (a tensor whose first dimension is not the batch, differing positions) raises
`CacheRowsError`, and the caller keeps to the unshared path.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from unified.models.layers import TransformerCache


class CacheRowsError(TypeError):
    """The cache holds something these row operations cannot map safely."""


def _rebuild(obj: Any, leaf: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`obj` with `leaf` applied to every tensor of rank >= 1 (0-d tensors, numbers, None kept)."""
    if isinstance(obj, torch.Tensor):
        return leaf(obj) if obj.dim() > 0 else obj
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(x, leaf) for x in obj)
    if isinstance(obj, dict):
        return {k: _rebuild(v, leaf) for k, v in obj.items()}
    if hasattr(obj, "__dict__"):
        new = copy.copy(obj)
        new.__dict__.update({k: _rebuild(v, leaf) for k, v in vars(obj).items()})
        return new
    raise CacheRowsError(f"cannot map a {type(obj).__name__} in a decoding cache")


def take_rows(cache: Any, index: torch.Tensor | Sequence[int], batch: int) -> Any:
    """A new cache holding rows `index` (repeats allowed) of `cache`, whose batch size is
    `batch`; `cache` itself is left untouched (the rows are copies)."""
    idx = torch.as_tensor(index, dtype=torch.long)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] != batch:
            raise CacheRowsError(f"a cache tensor of shape {tuple(t.shape)} has no batch dimension of {batch}")
        return t.index_select(0, idx.to(t.device))

    return _rebuild(cache, leaf)


def _trimmed(cache: Any) -> Any:
    """KV caches cut to their filled length (capacities depend on the append history)."""
    if isinstance(cache, TransformerCache):
        new = copy.copy(cache)
        new.k = [k[:, :, :n] for k, n in zip(cache.k, cache.lengths)]
        new.v = [v[:, :, :n] for v, n in zip(cache.v, cache.lengths)]
        new.lengths = list(cache.lengths)
        return new
    if isinstance(cache, (list, tuple)):
        return type(cache)(_trimmed(x) for x in cache)
    if hasattr(cache, "__dict__") and not isinstance(cache, torch.Tensor):
        new = copy.copy(cache)
        new.__dict__.update({k: _trimmed(v) for k, v in vars(cache).items()})
        return new
    return cache


def stack_rows(caches: Sequence[Any]) -> Any:
    """One cache whose rows are the rows of `caches` in order (the same variant and the same
    positions consumed; otherwise CacheRowsError)."""
    parts = [_trimmed(c) for c in caches]

    def merge(objs: list[Any]) -> Any:
        first = objs[0]
        if isinstance(first, torch.Tensor):
            if first.dim() == 0:
                return first
            if any(o.shape[1:] != first.shape[1:] for o in objs):
                raise CacheRowsError("cache tensors of different shapes cannot be stacked")
            return torch.cat(objs, dim=0)
        if first is None or isinstance(first, (bool, int, float, str)):
            if any(o != first for o in objs):
                raise CacheRowsError(f"caches at different positions cannot be stacked ({objs[:3]} ...)")
            return first
        if isinstance(first, (list, tuple)):
            if all(isinstance(x, torch.Tensor) and x.dim() == 0 for o in objs for x in o):
                return first  # logging scalars of the latest forward (e.g. rsm's gate means)
            if any(len(o) != len(first) for o in objs):
                raise CacheRowsError("caches of different structure cannot be stacked")
            return type(first)(merge([o[i] for o in objs]) for i in range(len(first)))
        if hasattr(first, "__dict__") and all(type(o) is type(first) for o in objs):
            new = copy.copy(first)
            new.__dict__.update({k: merge([vars(o)[k] for o in objs]) for k in vars(first)})
            return new
        raise CacheRowsError(f"cannot stack a {type(first).__name__} in a decoding cache")

    return merge(parts)
