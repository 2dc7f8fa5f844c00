"""Training options: `TrainConfig`, nested in sections (`ModelOptions`, `OptimOptions`,
`DataOptions`, the curriculum's own `TaskCurriculumConfig`, `ValidationOptions`,
`RuntimeOptions`), each option declared once with its default, help, accepted names (`choices`)
and range in the field's metadata (`opt`). train.py's flags are derived from these fields
(`unified.train.flags`), `unified.train.resolve.resolve` checks them against the same metadata
and fills the defaults, config.json stores the flat view (`TrainConfig.flatten`).

Why a small deriver over `dataclasses.fields` and no library: HfArgumentParser does not nest
dataclasses; tyro, jsonargparse and simple_parsing would be new dependencies and each names
nested flags after the section (`--optim.lr`), while users know the flat names (`--lr`). The
deriver is ~100 lines (flags.py) and keeps the flat names and `unified.cli`'s one-line errors.

Flat names: every leaf is known by one flat name, unique across sections (tested): its field
name, except in the curriculum section, whose fields are `curriculum_<field>`. The flat name is
the flag (`--lr`, `--curriculum_patience`), the key in config.json and on `cfg.<name>` (a
read-only view of the section's field). The learning-rate schedule is `lr_factor`.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch

from unified.data.task_curriculum import STRATEGIES, TaskCurriculumConfig
from unified.errors import UnknownNameError
from unified.models import variant_names
from unified.models.config import SCALES
from unified.ops.precision import MATMUL_PRECISIONS
from unified.text.corpus import describe_sources
from unified.train.tracking import REPORT_TO

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCHEDULES = ("cosine", "wsd", "constant")


def opt(default: Any = None, help: str = "", *, choices: Sequence[str] | None = None, low: float | None = None,
        high: float | None = None, low_open: bool = False, hidden: bool = False, kind: str | None = None,
        factory: Any = None) -> Any:
    """A config field with its one declaration: default, --help text, accepted names (`choices`,
    checked by `resolve`; `kind` names them in the error, default the flag), numeric range
    [`low`, `high`] (`low_open`: > low), and `hidden` (a testing aid kept out of --help)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "low": low, "high": high,
            "low_open": low_open, "hidden": hidden, "kind": kind}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelOptions:
    """Which model: variant, scale and model options (`--set KEY=VALUE`)."""

    variant: str = opt("baseline", f"one of {', '.join(variant_names())}")
    model_size: str = opt("micro", "model scale", choices=SCALES, kind="model size")
    model_overrides: dict[str, Any] = opt(
        help="model option override, repeatable (e.g. --set n_loops=4 --set dropout=0.1)", factory=dict)


@dataclass(frozen=True)
class OptimOptions:
    """Batch, budget, learning rate and schedule."""

    batch_size: int = opt(16, "sequences per micro-batch per process", low=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step", low=1)
    lr: float | None = opt(None, "peak learning rate (default 1e-3 pico/micro, 6e-4 above)", low=0, low_open=True)
    min_lr_ratio: float = opt(0.1, "final learning rate as a share of the peak", low=0, high=1)
    weight_decay: float = opt(0.1, "AdamW weight decay (weight matrices only)", low=0)
    warmup_steps: int | None = opt(None, "linear warmup steps (default 5%% of the steps, at most 500)", low=0)
    schedule: str = opt("cosine", "learning-rate schedule after warmup", choices=SCHEDULES)
    total_tokens: int = opt(20_000_000, "training budget in tokens", low=1)
    max_steps: int | None = opt(None, "stop after this many optimizer steps (overrides --total_tokens)", low=1)
    grad_clip: float = opt(1.0, "gradient-norm clip", low=0, low_open=True)


@dataclass(frozen=True)
class DataOptions:
    """Tokenizer, sequence length, the algorithmic tasks and the language phase."""

    tokenizer: str = opt("byte", "byte; bpe:N (byte-level BPE of N tokens trained on the language training text, "
                                 "saved as tokenizer.json); or an HF tokenizer name / local path")
    seq_len: int = opt(256, "tokens per training sequence", low=1)
    alg_tasks: str = opt("all", "comma-separated task names, or all")
    alg_tokens: int | None = opt(None, "end of the algorithmic phase (default: half the run's tokens; all with "
                                       "--lang_dataset none)", low=0)
    lang_dataset: str = opt("auto", f"language phase data: {describe_sources()}. auto = TinyStories when cached "
                                    f"or reachable, else the offline procedural story corpus; none = algorithmic "
                                    f"phase only")
    lang_data: str | None = opt(None, "local .txt file or folder (same as --lang_dataset PATH)")
    lang_max_tokens: int | None = opt(None, "cap on the training tokens taken from a hub dataset (cached separately)",
                                      low=2)
    lang_alg_fraction: float = opt(0.15, "algorithmic share kept in the language phase", low=0, high=1)
    use_task_curriculum: bool = opt(False, "per-task competence curriculum: EMA of validation exact match moves "
                                           "each task's difficulty and reweights sampling toward unmastered tasks")


@dataclass(frozen=True)
class ValidationOptions:
    """What each validation (every --eval_every steps, with a checkpoint) measures."""

    eval_every: int = opt(200, "steps between validation + checkpoint", low=1)
    eval_samples: int = opt(32, "held-out validation prompts per task", low=1)
    val_rows: int = opt(32, "held-out rows of the validation loss (val_loss)", low=1)
    val_lang_tokens: int = opt(131_072, "held-out language tokens scored at each validation (val_lang_loss and its "
                                         "stderr; at most those trained between two)", low=1)


@dataclass(frozen=True)
class RuntimeOptions:
    """Where the run goes and how this process runs it."""

    output_dir: str | None = opt(None, "run folder (default runs/<size>_<variant>, a suffix is added if taken)")
    seed: int = opt(0, "weights, data and dropout seed", low=0, high=2**32 - 1)
    resume: bool = opt(False, "continue the run in --output_dir from last.pt")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N, mps")
    dtype: str = opt("fp32", "autocast precision", choices=tuple(DTYPES))
    compile: bool = opt(False, "torch.compile the training model")
    matmul_precision: str = opt("auto", "float32 matmul path; auto: the fast oneDNN path ('medium') where its error "
                                        "vs float64 is float32-level, else 'highest' (see docs/performance.md)",
                                choices=MATMUL_PRECISIONS)
    log_every: int = opt(10, "steps between train records in metrics.jsonl", low=1)
    report_to: str = opt("none", "also log metrics.jsonl's numbers to TensorBoard (event files in the run folder) "
                                 "or W&B (optional package; offline unless logged in)", choices=REPORT_TO)
    debug_nan_step: int | None = opt(None, "testing aid: make the loss NaN at this step", low=0, hidden=True)


# Help of the curriculum flags (TaskCurriculumConfig is reused as it is; its fields carry no metadata).
CURRICULUM_HELP = {
    "strategy": "competence; dag: also unlock tasks in dependency order, replaying mastered ones",
    "ema": "weight of the newest validation score in a task's competence",
    "raise_at": "competence that raises a task's difficulty",
    "lower_at": "competence that lowers it",
    "cooldown": "steps between two difficulty changes of one task",
    "min_task_evals": "validations at a difficulty before the curriculum may change it",
    "jitter": "share of a task's examples replayed at an easier difficulty",
    "floor": "minimum sampling weight of a task (before normalizing)",
    "unlock_at": "dag: competence a dependency needs at the top of its range ...",
    "patience": "dag: ... for this many validations in a row",
    "replay": "dag: share of algorithmic rows given to mastered tasks",
    "stall_evals": "dag: open the next task after this many validations without an unlock",
}
CURRICULUM_CHOICES = {"strategy": STRATEGIES}
LEGACY_FLAT = {"task_curriculum_strategy": "curriculum_strategy"}  # older names, still read (CLI alias too)


@dataclass(frozen=True)
class Leaf:
    """One option as the flat view sees it: flat name, section, field, type, metadata."""

    name: str
    section: str
    field: str
    type: Any
    default: Any
    meta: Mapping[str, Any]


@dataclass(frozen=True)
class TrainConfig:
    """Every training option, in sections. Build from flat names with `from_flat`; read a leaf as
    `cfg.optim.lr` or `cfg.lr`; `resolve` returns the checked copy with every default filled."""

    model: ModelOptions = field(default_factory=ModelOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    data: DataOptions = field(default_factory=DataOptions)
    curriculum: TaskCurriculumConfig = field(default_factory=TaskCurriculumConfig)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __getattr__(self, name: str) -> Any:  # only called for names that are not sections
        leaf = LEAVES.get(name) if not name.startswith("_") else None
        if leaf is None:
            raise AttributeError(f"TrainConfig has no option {name!r}")
        return getattr(object.__getattribute__(self, leaf.section), leaf.field)

    def flatten(self) -> dict[str, Any]:
        """{flat name: value} of every option (what config.json and checkpoints store)."""
        return {leaf.name: _copy(getattr(getattr(self, leaf.section), leaf.field)) for leaf in LEAVES.values()}

    @classmethod
    def from_flat(cls, values: Mapping[str, Any] | None = None, **kw: Any) -> "TrainConfig":
        """A TrainConfig from flat names (`values` and keywords; older names such as
        task_curriculum_strategy accepted); unset options keep their defaults. An unknown name is
        an UnknownNameError listing the accepted ones."""
        parts: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for name, value in {**(values or {}), **kw}.items():
            leaf = LEAVES.get(LEGACY_FLAT.get(name, name))
            if leaf is None:
                raise UnknownNameError("training option", name, LEAVES)
            parts[leaf.section][leaf.field] = _copy(value)
        return cls(**{s: SECTIONS[s](**parts[s]) for s in SECTIONS})

    def replace(self, **flat: Any) -> "TrainConfig":
        """A copy with the given flat options changed (self is never modified)."""
        return type(self).from_flat({**self.flatten(), **flat})

    @property
    def language_spec(self) -> str:
        """The language source asked for: --lang_data PATH, else --lang_dataset."""
        return self.data.lang_data or self.data.lang_dataset

    def task_curriculum_config(self) -> TaskCurriculumConfig:
        """The per-task curriculum settings (--curriculum_*), a copy the curriculum may keep."""
        return dataclasses.replace(self.curriculum)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}  # type: ignore[misc]


def _leaves() -> Iterator[Leaf]:
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if section == "curriculum":
                meta = {"help": CURRICULUM_HELP.get(f.name, ""), "choices": CURRICULUM_CHOICES.get(f.name)}
                name = f"curriculum_{f.name}"
            else:
                meta, name = dict(f.metadata), f.name
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            yield Leaf(name, section, f.name, hints[f.name], default, meta)


LEAVES: dict[str, Leaf] = {leaf.name: leaf for leaf in _leaves()}


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


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
