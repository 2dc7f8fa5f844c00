"""Resolve, then run: every training option is checked and every default filled before any data
is read or any model built.

1. `resolve(cfg, world_size)` is pure (no file, no network, no data; it never modifies `cfg`)
   and returns a new `TrainConfig`: each leaf checked against its declaration (type, `choices`,
   range: `unified.train.config.opt`), the variant made canonical (`resolve_variant`), the
   `--set` model options typed and checked against the variant, the task names, the tokenizer
   name's syntax, the schedule, dtype, device string and `--report_to`, the curriculum settings;
   then the defaults filled: `--lr` by size, `--warmup_steps` from the step count, `--alg_tokens`
   from the run's tokens (`step_plan` is the one place the step count is computed).
   `resolve(resolve(c)) == resolve(c)`.
2. What needs the machine or the disk is one step each, in this order, in `Trainer.__init__`:
   `claim_output_dir` (the run folder and its lock: a default one gets the first suffix that holds
   no run and is not being set up by another train.py; never an existing run without --resume), `--resume`'s reconciliation with the stored run
   (`unified.train.resume`, which returns a new config, resolved again), `machine_settings` (the
   torch device, the float32 matmul precision measured on it, freed host memory kept for reuse), and last the language data
   (`--lang_dataset auto` picks its concrete source when the data is loaded).
The Trainer keeps the resolved config and never assigns to it (TrainConfig and its own sections are
frozen; the reused TaskCurriculumConfig is copied before the curriculum keeps it).
"""
from __future__ import annotations

import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from unified.data.tasks import resolve_tasks
from unified.devices import check_device
from unified.errors import ConfigError, UnknownNameError, require
from unified.models import resolve_variant, split_overrides
from unified.models.optioncheck import check_number, coerce_overrides, conforms
from unified.ops.host_memory import reuse_freed_host_memory
from unified.ops.precision import set_matmul_precision
from unified.text.tokenizer import BPE_SPECIALS, bpe_size, is_bpe_name
from unified.train.config import LEAVES, TrainConfig
from unified.train.tracking import check_report_to


@dataclass(frozen=True)
class StepPlan:
    """Tokens per optimizer step (all processes) and the run's number of steps."""

    tokens_per_step: int
    total_steps: int

    @property
    def run_tokens(self) -> int:
        """Tokens the run trains on (--max_steps may make it differ from --total_tokens)."""
        return self.tokens_per_step * self.total_steps


def step_plan(cfg: TrainConfig, world_size: int = 1) -> StepPlan:
    """The step count of `cfg` with `world_size` processes: --max_steps, else --total_tokens over
    the global batch (--batch_size x --seq_len x --grad_accum x processes)."""
    tokens = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world_size
    return StepPlan(tokens, cfg.max_steps or max(1, cfg.total_tokens // tokens))


def check_leaves(cfg: TrainConfig) -> None:
    """Each option against its declaration: its type, then its accepted names and its range."""
    for name, leaf in LEAVES.items():
        value, hint = getattr(cfg, name), leaf.type  # (curriculum ranges: TaskCurriculumConfig.check)
        if leaf.meta.get("low") is not None or leaf.meta.get("high") is not None:  # (finiteness too)
            check_number(f"--{name}", value, leaf.meta.get("low"), leaf.meta.get("high"),
                         low_open=leaf.meta.get("low_open", False), integer=_is_int(hint))
        if not conforms(value, hint):
            raise ConfigError(f"--{name} takes {_type_name(hint)}, got {value!r}")
        choices = leaf.meta.get("choices")
        if choices is not None and value not in choices:
            raise UnknownNameError(leaf.meta.get("kind") or f"--{name}", value, choices)


def check_tokenizer_name(name: str, language_spec: str) -> None:
    """The --tokenizer name's syntax (a bpe:N vocabulary large enough; bpe:N needs language text
    to train on); hub names and paths are checked when loaded."""
    if not name.startswith("bpe:"):
        require(name.strip() == name and name != "", f"bad --tokenizer {name!r}; accepted: byte, bpe:N, "
                                                     f"bpe:N:<12 hex digits>, an HF tokenizer name or a local path")
        return
    require(is_bpe_name(name), f"bad tokenizer name {name!r}; accepted: bpe:N (train one) or bpe:N:<12 hex digits>")
    n = bpe_size(name)
    if n is not None:
        require(n >= len(BPE_SPECIALS) + 257, f"--tokenizer bpe:{n}: the vocabulary must hold the 256 bytes, 3 special "
                                              f"tokens and at least one merge (N >= {len(BPE_SPECIALS) + 257})")
        require(language_spec != "none", f"--tokenizer {name} is trained on language data; it needs a "
                                         f"--lang_dataset other than none")


def resolve(cfg: TrainConfig, world_size: int = 1) -> TrainConfig:
    """The checked, completed copy of `cfg` for `world_size` processes (see the module
    docstring); a bad name or value is a one-line UnifiedError. Reads no file or data."""
    check_leaves(cfg)
    variant = resolve_variant(cfg.variant)
    overrides = coerce_overrides(variant, cfg.model_overrides)
    split_overrides(variant, overrides)
    limit = overrides.get("max_seq_len")
    require(limit is None or cfg.seq_len <= limit,
            f"--seq_len {cfg.seq_len} is longer than the model supports (max_seq_len={limit} from --set); "
            f"lower --seq_len or raise max_seq_len")
    resolve_tasks(cfg.alg_tasks)
    check_tokenizer_name(cfg.tokenizer, cfg.language_spec)
    require(not (cfg.lang_data and cfg.lang_dataset not in ("auto", cfg.lang_data)),
            f"--lang_data {cfg.lang_data!r} and --lang_dataset {cfg.lang_dataset!r} disagree; give one of them")
    plan = step_plan(cfg, world_size)
    require(cfg.max_steps is not None or cfg.total_tokens >= plan.tokens_per_step,
            f"--total_tokens {cfg.total_tokens} is less than one optimizer step of {plan.tokens_per_step} tokens "
            f"(--batch_size x --seq_len x --grad_accum{' x processes' if world_size > 1 else ''}); "
            f"give --total_tokens >= {plan.tokens_per_step} or --max_steps")
    if cfg.device != "auto":
        check_device(cfg.device)
    check_report_to(cfg.report_to)
    cfg.curriculum.check()  # checked even when unused: a bad value is a typo either way
    alg_tokens = cfg.alg_tokens
    if alg_tokens is None:  # the run's tokens (--max_steps may shorten total_tokens)
        alg_tokens = plan.run_tokens if cfg.language_spec == "none" else plan.run_tokens // 2
    lr = cfg.lr if cfg.lr is not None else (1e-3 if cfg.model_size in ("pico", "micro") else 6e-4)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(500, max(1, plan.total_steps // 20))
    return cfg.replace(variant=variant, model_overrides=overrides, alg_tokens=alg_tokens, lr=lr, warmup_steps=warmup)


def run_dir_candidates(cfg: TrainConfig) -> Iterator[Path]:
    """The folders a run may go to, best first: --output_dir alone (refused when it holds a run and
    this is not --resume), else runs/<size>_<variant>, then _2, _3 ... (those holding a run skipped)."""
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        if not cfg.resume and (out / "config.json").exists():
            raise ConfigError(f"--output_dir {str(out)!r} already holds a run; use --resume to continue it "
                              f"or choose another --output_dir")
        yield out
        return
    base = Path("runs") / f"{cfg.model_size}_{cfg.variant}"
    if cfg.resume:
        yield base
        return
    for k in itertools.count(1):
        out = base if k == 1 else Path(f"{base}_{k}")
        if not (out / "config.json").exists():
            yield out


def claim_output_dir(cfg: TrainConfig, lock: Any, make_writable: Callable[[Path], Any]) -> Path:
    """Rank 0's run folder, locked by `lock` (a RunLock): the first candidate whose lock is free.
    A default-named folder another train.py is still setting up (locked, no config.json yet) is
    passed over for the next suffix; an explicit --output_dir in use is refused (the lock's error).
    A --resume into a folder that does not exist creates nothing (it fails later, in resume)."""
    for out in run_dir_candidates(cfg):
        if cfg.resume and not out.is_dir():
            return out
        make_writable(out)
        try:
            lock.acquire(out)
        except ConfigError:
            if cfg.output_dir or cfg.resume:
                raise
            continue
        return out
    raise AssertionError("unreachable: the default candidates never end")


@dataclass(frozen=True)
class MachineSettings:
    """What this process runs on: the torch device and the float32 matmul precision set there."""

    device: torch.device
    matmul_precision: str  # the setting chosen (auto -> medium or highest, measured on the device)


def machine_settings(cfg: TrainConfig) -> MachineSettings:
    """Pick the device (--device auto: cuda when available), set the matmul precision on it
    (`unified.ops.precision.set_matmul_precision`; the chosen setting goes to config.json), and
    keep freed host memory for reuse (`unified.ops.host_memory`)."""
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    reuse_freed_host_memory()
    return MachineSettings(device, set_matmul_precision(cfg.matmul_precision, device).setting)


def _is_int(hint: object) -> bool:
    return hint is int or int in typing.get_args(hint)


def _type_name(hint: object) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    return f"{names}{' or null' if type(None) in typing.get_args(hint) else ''}"
