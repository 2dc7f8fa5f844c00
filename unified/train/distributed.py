"""Multi-process training helpers (torchrun / DistributedDataParallel).

`python -m torch.distributed.run --nproc_per_node=N train.py ...` (alias `torchrun`) starts N
processes with RANK / WORLD_SIZE / LOCAL_RANK set; `init_from_env` joins them (NCCL on CUDA,
gloo on CPU). Every helper here is a no-op when the world has one process, so single-process
code calls them unconditionally.

The training objective is defined on the *global* batch (every rank's rows together): the
cross-entropy summed over its supervised tokens divided by their global count, plus the mean of
any auxiliary loss over ranks and micro-batches. The trainer sums the model's `token_ce` and
counts the supervised tokens (`supervised_count`), and `all_reduce_sum` adds both over ranks,
so N processes with batch b give the same loss and gradients as one process with batch N*b even
when ranks hold different numbers of supervised tokens (answer-only masking).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from unified.models.base import IGNORE_INDEX


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def world_from_env() -> World:
    """The World described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK (1 process if unset)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device: str = "auto") -> tuple[World, str]:
    """Join the process group when started by torchrun; returns (world, device). Under torchrun
    on CUDA each process takes GPU LOCAL_RANK and NCCL; on CPU, gloo."""
    world = world_from_env()
    if world.world_size == 1:
        return world, device
    import torch.distributed as dist

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return world, device


def shutdown() -> None:
    """Leave the process group (if one was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active(world_size: int) -> bool:
    return world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def barrier(world_size: int) -> None:
    """Wait for every process."""
    if _active(world_size):
        torch.distributed.barrier()


@contextlib.contextmanager
def rank_zero_first(world: World) -> Iterator[None]:
    """Run the body on rank 0 first, then on the others: rank 0 fills caches (token caches,
    trained tokenizers) that the other ranks then read instead of building them concurrently."""
    if world.rank != 0:
        barrier(world.world_size)
    yield
    if world.rank == 0:
        barrier(world.world_size)


def broadcast_object(obj: Any, world_size: int) -> Any:
    """Rank 0's `obj` on every rank (picklable objects)."""
    if not _active(world_size):
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, world_size: int) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not _active(world_size):
        return [obj]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float], world_size: int, device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of `values` over ranks (float64, so sums of token counts stay exact)."""
    if not _active(world_size):
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def supervised_count(targets: torch.Tensor) -> int:
    """Number of supervised positions (target != -100)."""
    return int((targets != IGNORE_INDEX).sum())
