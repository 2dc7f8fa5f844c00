"""The evaluation hub: load a checkpoint, run suites, write results files.

Suites register in `SUITES` (name -> function(EvalContext) -> payload dict); `--suite all` runs
every registered suite and also writes a combined results_all.json.
Evaluation-time options that change the model or a suite's grid are that suite's `eval_options`
(`suite_eval_options`); when there are any, results go to `results_<suite>@<tag>.json` and the
as-trained `results_<suite>.json` is left alone.
"""
from __future__ import annotations

import glob
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from unified.data.tasks import TASK_NAMES, resolve_tasks
from unified.errors import CheckpointError, ConfigError, UnknownNameError
from unified.evals.algorithmic import AlgorithmicSettings, run_algorithmic
from unified.evals.needle import NeedleSettings, run_needle
from unified.evals.perplexity import PerplexitySettings, run_perplexity
from unified.evals.results import base_meta, options_tag, write_results
from unified.models import VARIANTS, LanguageModel
from unified.models.ssm import kernel_backends
from unified.text.tokenizer import Tokenizer, load_tokenizer
from unified.train.checkpoint import file_sha256, load_checkpoint, model_from_checkpoint


@dataclass
class EvalSettings:
    """The typed evaluation choices of one eval_hub.py call (`unified.evals.flags.eval_settings`
    builds them from its options): the model options to change (`--set`), the algorithmic tasks
    (None: all), each suite's own Settings (their defaults are the Settings dataclasses' fields)
    and the output folder (the needle plot goes there)."""

    overrides: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None
    algorithmic: AlgorithmicSettings = field(default_factory=AlgorithmicSettings)
    needle: NeedleSettings = field(default_factory=NeedleSettings)
    perplexity: PerplexitySettings = field(default_factory=PerplexitySettings)
    output_dir: str | None = None


@dataclass
class EvalContext:
    """Everything a suite needs: the model, its tokenizer, the checkpoint and the evaluation settings."""

    model: LanguageModel
    tokenizer: Tokenizer
    checkpoint: dict[str, Any]
    checkpoint_path: Path
    settings: EvalSettings = field(default_factory=EvalSettings)
    meta_extra: dict[str, Any] = field(default_factory=dict)  # suites add e.g. their grid here


def suite_algorithmic(ctx: EvalContext) -> dict[str, Any]:
    """Algorithmic IID + OOD grid (`unified.evals.algorithmic`)."""
    settings = ctx.settings.algorithmic
    ctx.meta_extra["algorithmic_settings"] = asdict(settings)
    return run_algorithmic(ctx.model, ctx.tokenizer, resolve_tasks(ctx.settings.tasks), settings)


def training_length(ctx: EvalContext) -> int:
    """The sequence length the checkpoint was trained at (its train_config), else the model's max_seq_len."""
    seq_len = (ctx.checkpoint.get("train_config") or {}).get("seq_len")
    if isinstance(seq_len, int) and not isinstance(seq_len, bool) and seq_len > 0:
        return seq_len
    return int(ctx.model.cfg.max_seq_len)


def suite_needle(ctx: EvalContext) -> dict[str, Any]:
    """Passkey retrieval over context length x depth (`unified.evals.needle`), lengths relative to
    the checkpoint's training length unless absolute ones are set; draws needle.png into the
    output folder (needle@<tag>.png for non-default options)."""
    settings = replace(ctx.settings.needle, train_len=training_length(ctx))
    ctx.meta_extra["needle_settings"] = asdict(settings)
    out_dir = ctx.settings.output_dir
    tag = options_tag(suite_eval_options(ctx.settings, "needle"))
    plot = Path(out_dir) / (f"needle@{tag}.png" if tag else "needle.png") if out_dir else None
    return run_needle(ctx.model, ctx.tokenizer, settings, plot_path=plot)


def suite_perplexity(ctx: EvalContext) -> dict[str, Any]:
    """Token / word perplexity and bits per byte on held-out text (`unified.evals.perplexity`)."""
    settings = ctx.settings.perplexity
    ctx.meta_extra["perplexity_settings"] = asdict(settings)
    return run_perplexity(ctx.model, ctx.tokenizer, ctx.checkpoint, settings)


SUITES: dict[str, Callable[[EvalContext], dict[str, Any]]] = {
    "algorithmic": suite_algorithmic, "needle": suite_needle, "perplexity": suite_perplexity}


def resolve_suite(name: str) -> list[str]:
    """Suite names to run for `name` ("all" = every registered suite)."""
    if name == "all":
        return list(SUITES)
    if name not in SUITES:
        raise UnknownNameError("suite", name, [*SUITES, "all"])
    return [name]


def newest_checkpoint(root: str | Path = "runs") -> Path:
    """The most recently written runs/*/best_model.pt (searched recursively)."""
    found = [Path(p) for p in glob.glob(os.path.join(str(root), "**", "best_model.pt"), recursive=True)]
    if not found:
        raise CheckpointError(f"no --checkpoint given and no {root}/*/best_model.pt found; train a model first "
                              f"(python train.py) or pass --checkpoint PATH")
    return max(found, key=lambda p: p.stat().st_mtime)


def check_override_names(overrides: dict[str, Any]) -> None:
    """Before any checkpoint is read: every `--set` key must be an option that some registered
    variant can change after training (whether the checkpoint's variant can, and the value's
    type, are `check_overrides`' job once it is loaded); else a one-line ConfigError listing them."""
    by_key: dict[str, list[str]] = {}
    for name, spec in VARIANTS.items():
        for key in spec.cls.eval_overridable:
            by_key.setdefault(key, []).append(name)
    for key in overrides:
        if key not in by_key:
            accepted = "; ".join(f"{k} ({', '.join(v)})" for k, v in by_key.items())
            raise ConfigError(f"--set {key}: no variant can change {key!r} after training; changeable: {accepted}")


def check_overrides(model: LanguageModel, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` checked against the variant: each key must be one of its `eval_overridable`
    options and each value of that option's type (counts are integers >= 1, switches true or
    false); otherwise a one-line ConfigError saying what is accepted."""
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in model.eval_overridable:
            accepted = ", ".join(model.eval_overridable) or "none"
            raise ConfigError(f"option {name!r} cannot be changed after training for variant "
                              f"{model.cfg.variant!r}; changeable: {accepted}")
        current = getattr(model.opts, name)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"--set {name}={value!r}: must be true or false")
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--set {name}={value!r}: must be an integer >= 1")
        elif isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"--set {name}={value!r}: must be a finite number")
            value = float(value)
        out[name] = value
    return out


def load_for_eval(path: str | Path, device: str = "cpu", tokenizer: str | None = None,
                  overrides: dict[str, Any] | None = None) -> EvalContext:
    """Load checkpoint + model + tokenizer (the checkpoint's own unless one is named); apply the
    checked `overrides` (recorded in `settings.overrides`, so results say they were used)."""
    ckpt = load_checkpoint(path)
    name = tokenizer or ckpt["tokenizer"]
    tok = load_tokenizer(name, tokenizer_json=ckpt.get("tokenizer_json") if name == ckpt["tokenizer"] else None)
    model = model_from_checkpoint(ckpt, device=device, tokenizer_name=tok.name)
    checked = check_overrides(model, overrides or {})
    if checked:
        model.apply_overrides(**checked)
    model.eval()
    return EvalContext(model=model, tokenizer=tok, checkpoint=ckpt, checkpoint_path=Path(path),
                       settings=EvalSettings(overrides=checked))


def suite_eval_options(settings: EvalSettings, suite: str) -> dict[str, Any]:
    """The evaluation-time options that make `suite`'s results differ from the as-trained ones,
    named as their flags: the model overrides (every suite), and the suite's settings that are not
    its Settings dataclass defaults (algorithmic: tasks, limit, ood, seed; needle: lengths,
    factors, depths, samples, seed; perplexity: text source, max tokens, prefix). "all": the
    union. Empty = as trained."""
    if suite == "all":
        out: dict[str, Any] = {}
        for name in SUITES:
            out.update(suite_eval_options(settings, name))
        return out
    out = dict(settings.overrides)
    if suite == "algorithmic":
        a, d = settings.algorithmic, AlgorithmicSettings()
        tasks = sorted(t.name for t in resolve_tasks(settings.tasks))
        if tasks != sorted(TASK_NAMES):
            out["tasks"] = tasks
        if a.limit != d.limit:
            out["limit"] = a.limit
        grid = {name: list(v) for name, v in sorted(a.ood_grid.items())
                if tuple(v) != tuple(resolve_tasks([name])[0].ood_values)}
        if grid:
            out["ood"] = grid
        if a.seed != d.seed:
            out["seed"] = a.seed
    elif suite == "needle":
        s, d = settings.needle, NeedleSettings()
        if s.context_lengths is not None:
            out["needle_lengths"] = sorted({int(n) for n in s.context_lengths})
        elif tuple(map(float, s.length_factors)) != tuple(map(float, d.length_factors)):
            out["needle_factors"] = [float(f) for f in s.length_factors]
        if tuple(map(float, s.depths)) != tuple(map(float, d.depths)):
            out["depths"] = [float(x) for x in s.depths]
        if s.samples != d.samples:
            out["needle_samples"] = s.samples
        if s.seed != d.seed:
            out["seed"] = s.seed
    elif suite == "perplexity":
        p, d = settings.perplexity, PerplexitySettings()
        if p.text_file:
            out["text_file"] = text_file_id(p.text_file)
        if p.dataset:
            out["ppl_dataset"] = p.dataset
        if p.max_tokens != d.max_tokens:
            out["ppl_max_tokens"] = p.max_tokens or 0  # the flag's 0 = all
        if p.prefix != d.prefix:
            out["ppl_prefix"] = p.prefix
    return out


def text_file_id(path: str | Path) -> str:
    """`<file stem>-<first 8 hex of its sha256>` (the content names it, wherever it lies)."""
    p = Path(path)
    try:
        return f"{p.stem}-{file_sha256(p)[:8]}"
    except OSError:
        return p.stem


def run_suites(ctx: EvalContext, suite: str, out_dir: str | Path) -> dict[str, Path]:
    """Run the suite(s) and write results_<suite>.json (and results_all.json for "all")."""
    names = resolve_suite(suite)
    if ctx.settings.output_dir is None:
        ctx.settings = replace(ctx.settings, output_dir=str(out_dir))
    written: dict[str, Path] = {}
    payloads: dict[str, Any] = {}
    sha = file_sha256(ctx.checkpoint_path)
    t_all = time.time()
    for name in names:
        t0 = time.time()
        ctx.meta_extra = {}
        payload = SUITES[name](ctx)
        meta = suite_meta(ctx, sha, time.time() - t0, suite_eval_options(ctx.settings, name))
        written[name] = write_results(out_dir, name, payload, meta, tag=meta["eval_tag"])
        payloads[name] = payload
    if suite == "all":
        meta = suite_meta(ctx, sha, time.time() - t_all, suite_eval_options(ctx.settings, "all"))
        written["all"] = write_results(out_dir, "all", payloads, meta, tag=meta["eval_tag"])
    return written


def suite_meta(ctx: EvalContext, sha: str, wall: float, eval_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Results metadata of one suite run (docs/design.md#contract-4), with the non-default evaluation
    options (`eval_options`, {} = as trained) and the file-name tag made from them."""
    m = ctx.model
    p = next(m.parameters())
    desc = ctx.checkpoint["model"]
    return base_meta(checkpoint=str(ctx.checkpoint_path), checkpoint_sha256=sha, variant=desc["variant"],
                     size=desc["size"], params=m.num_params(), trainable_params=m.num_params(trainable_only=True),
                     frozen_params=m.num_frozen_params(), model_options=asdict(m.opts),
                     tokenizer=ctx.tokenizer.name, seed=ctx.settings.algorithmic.seed,
                     decoding={"strategy": "greedy", "cache": True}, device=str(p.device), dtype=str(p.dtype),
                     threads=torch.get_num_threads(), kernels=kernel_backends(m),
                     train_step=ctx.checkpoint.get("step"), wall_time_s=wall,
                     eval_options=eval_options or {}, eval_tag=options_tag(eval_options or {}), **ctx.meta_extra)
