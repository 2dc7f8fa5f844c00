"""Training options: `TrainConfig` (every train.py option, checked for range, finiteness and
type when parsed, stored resolved in config.json), the learning-rate schedule `lr_factor`, and
`resolve_output_dir` (where a run goes). The loop itself is `unified.train.trainer`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unified.data.task_curriculum import TaskCurriculumConfig
from unified.devices import check_device
from unified.errors import ConfigError, require
from unified.models.optioncheck import check_number, coerce_overrides
from unified.train.tracking import check_report_to

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Every training option; stored resolved in config.json."""

    variant: str = "baseline"
    model_size: str = "micro"
    output_dir: str | None = None  # default runs/<size>_<variant> (suffixed, never overwritten)
    seed: int = 0
    tokenizer: str = "byte"
    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    lr: float | None = None  # default: 1e-3 at pico/micro, 6e-4 above
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # default: 5% of the steps, at most 500
    schedule: str = "cosine"  # cosine | wsd | constant
    total_tokens: int = 20_000_000
    alg_tokens: int | None = None  # default: half of the run's tokens (all of them with --lang_dataset none)
    max_steps: int | None = None  # overrides the step count derived from total_tokens
    alg_tasks: str = "all"
    lang_dataset: str = "auto"  # auto | procedural[:SEED] | none | tinystories | wikitext103 | ... | PATH
    lang_data: str | None = None  # a local .txt file or folder (alias of --lang_dataset PATH)
    lang_max_tokens: int | None = None  # cap on the training tokens of a hub dataset
    lang_alg_fraction: float = 0.15
    use_task_curriculum: bool = False
    task_curriculum_strategy: str = "competence"  # competence | dag
    curriculum_cooldown: int = 0
    curriculum_min_task_evals: int = 2
    curriculum_jitter: float = 0.2
    curriculum_replay: float = 0.2
    eval_every: int = 200
    eval_samples: int = 32  # held-out validation examples per task at each validation
    val_rows: int = 32
    val_lang_tokens: int = 131_072  # held-out language tokens per validation (at most those trained between two)
    log_every: int = 10
    grad_clip: float = 1.0
    dtype: str = "fp32"
    compile: bool = False
    matmul_precision: str = "auto"  # float32 matmul setting, see unified.ops.precision (resolved value is recorded)
    device: str = "auto"
    resume: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)
    debug_nan_step: int | None = None  # testing aid: make the loss NaN at this step
    report_to: str = "none"  # none | tensorboard | wandb: metrics.jsonl's records also go there (unified.train.tracking)

    def validate(self, world_size: int = 1) -> None:
        """Reject impossible values with one clear message each, before any data is loaded: every
        numeric option is checked for range and finiteness, the device against this machine, and
        each --set value against its option's type (`world_size` processes share a step)."""
        for name in ("batch_size", "seq_len", "grad_accum", "total_tokens", "eval_every", "log_every",
                     "eval_samples", "val_rows", "val_lang_tokens"):
            require(getattr(self, name) >= 1, f"--{name} must be >= 1, got {getattr(self, name)}")
        require(self.max_steps is None or self.max_steps >= 1, f"--max_steps must be >= 1, got {self.max_steps}")
        require(self.alg_tokens is None or self.alg_tokens >= 0, f"--alg_tokens must be >= 0, got {self.alg_tokens}")
        check_number("--lr", self.lr, 0, low_open=True)
        check_number("--grad_clip", self.grad_clip, 0, low_open=True)
        check_number("--min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_number("--weight_decay", self.weight_decay, 0)
        check_number("--lang_alg_fraction", self.lang_alg_fraction, 0, 1)
        check_number("--warmup_steps", self.warmup_steps, 0, integer=True)
        check_number("--seed", self.seed, 0, 2**32 - 1, integer=True)
        check_number("--debug_nan_step", self.debug_nan_step, 0, integer=True)
        step_tokens = self.batch_size * self.seq_len * self.grad_accum * world_size
        require(self.max_steps is not None or self.total_tokens >= step_tokens,
                f"--total_tokens {self.total_tokens} is less than one optimizer step of {step_tokens} tokens "
                f"(--batch_size x --seq_len x --grad_accum{' x processes' if world_size > 1 else ''}); "
                f"give --total_tokens >= {step_tokens} or --max_steps")
        if self.device != "auto":
            check_device(self.device)
        check_report_to(self.report_to)
        require(self.schedule in ("cosine", "wsd", "constant"),
                f"unknown --schedule {self.schedule!r}; accepted: cosine, wsd, constant")
        require(self.dtype in DTYPES, f"unknown --dtype {self.dtype!r}; accepted: {', '.join(DTYPES)}")
        require(not (self.lang_data and self.lang_dataset not in ("auto", self.lang_data)),
                f"--lang_data {self.lang_data!r} and --lang_dataset {self.lang_dataset!r} disagree; give one of them")
        require(self.lang_max_tokens is None or self.lang_max_tokens >= 2,
                f"--lang_max_tokens must be >= 2, got {self.lang_max_tokens}")
        self.model_overrides = coerce_overrides(self.variant, self.model_overrides)
        limit = self.model_overrides.get("max_seq_len")
        require(limit is None or self.seq_len <= limit,
                f"--seq_len {self.seq_len} is longer than the model supports (max_seq_len={limit} from --set); "
                f"lower --seq_len or raise max_seq_len")
        self.task_curriculum_config().validate()  # checked even when unused: a bad value is a typo either way

    @property
    def language_spec(self) -> str:
        """The language source asked for: --lang_data PATH, else --lang_dataset."""
        return self.lang_data or self.lang_dataset

    def task_curriculum_config(self) -> TaskCurriculumConfig:
        """The per-task curriculum settings given by the --curriculum_* flags."""
        return TaskCurriculumConfig(strategy=self.task_curriculum_strategy, cooldown=self.curriculum_cooldown,
                                    min_task_evals=self.curriculum_min_task_evals, jitter=self.curriculum_jitter,
                                    replay=self.curriculum_replay)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine to min_ratio, WSD (constant, then
    linear decay over the last 20%), or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        decay_start = int(0.8 * total)
        if step < decay_start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (step - decay_start) / max(1, total - decay_start)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def resolve_output_dir(cfg: TrainConfig) -> Path:
    """The run folder: --output_dir, or runs/<size>_<variant> with a suffix when that holds a run."""
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        if not cfg.resume and (out / "config.json").exists():
            raise ConfigError(f"--output_dir {str(out)!r} already holds a run; use --resume to continue it "
                              f"or choose another --output_dir")
        return out
    base = Path("runs") / f"{cfg.model_size}_{cfg.variant}"
    if cfg.resume:
        return base
    out, k = base, 2
    while (out / "config.json").exists():
        out, k = Path(f"{base}_{k}"), k + 1
    return out
