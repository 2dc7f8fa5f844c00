"""The evaluation hub: load a checkpoint, run suites, write results files.

Suites register in `SUITES` (name -> function(EvalContext) -> payload dict); `--suite all` runs
every registered suite and also writes a combined results_all.json. Aliases map old names.
"""
from __future__ import annotations

import glob
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from unified.checkpoint import file_sha256, load_checkpoint, model_from_checkpoint
from unified.errors import CheckpointError, UnknownNameError
from unified.evals.algorithmic import AlgorithmicSettings, run_algorithmic
from unified.evals.needle import NeedleSettings, run_needle
from unified.evals.perplexity import PerplexitySettings, run_perplexity
from unified.evals.results import base_meta, write_results
from unified.model import LanguageModel
from unified.tasks import resolve_tasks
from unified.tokenizer import Tokenizer, load_tokenizer


@dataclass
class EvalContext:
    """Everything a suite needs: the model, its tokenizer, the checkpoint and the CLI options."""

    model: LanguageModel
    tokenizer: Tokenizer
    checkpoint: dict[str, Any]
    checkpoint_path: Path
    options: dict[str, Any] = field(default_factory=dict)
    meta_extra: dict[str, Any] = field(default_factory=dict)  # suites add e.g. their grid here


def suite_algorithmic(ctx: EvalContext) -> dict[str, Any]:
    """Algorithmic IID + OOD grid (`unified.evals.algorithmic`)."""
    o = ctx.options
    settings = AlgorithmicSettings(limit=o.get("limit") or 100, seed=o.get("seed", 0),
                                   batch_size=o.get("batch_size", 64))
    ctx.meta_extra["algorithmic_settings"] = asdict(settings)
    return run_algorithmic(ctx.model, ctx.tokenizer, resolve_tasks(o.get("tasks")), settings)


def suite_needle(ctx: EvalContext) -> dict[str, Any]:
    """Passkey retrieval over context length x depth (`unified.evals.needle`); draws needle.png
    into the output folder. `--limit` caps the samples per cell unless --needle_samples is given."""
    o = ctx.options
    default = NeedleSettings()
    samples = o.get("needle_samples") or min(default.samples, o.get("limit") or default.samples)
    settings = NeedleSettings(context_lengths=tuple(o.get("context_lengths") or default.context_lengths),
                              depths=tuple(o["depths"]) if o.get("depths") is not None else default.depths,
                              samples=samples, seed=o.get("seed", 0), batch_size=o.get("batch_size", 64))
    ctx.meta_extra["needle_settings"] = asdict(settings)
    out_dir = o.get("out_dir")
    plot = Path(out_dir) / "needle.png" if out_dir else None
    return run_needle(ctx.model, ctx.tokenizer, settings, plot_path=plot)


def suite_perplexity(ctx: EvalContext) -> dict[str, Any]:
    """Token / word perplexity and bits per byte on held-out text (`unified.evals.perplexity`)."""
    o = ctx.options
    default = PerplexitySettings()
    max_tokens = (o["ppl_max_tokens"] or None) if "ppl_max_tokens" in o else default.max_tokens  # 0 = all
    settings = PerplexitySettings(text_file=o.get("text_file"), dataset=o.get("ppl_dataset"), max_tokens=max_tokens,
                                  batch_size=o.get("batch_size", 64), prefix=o.get("ppl_prefix") or default.prefix)
    ctx.meta_extra["perplexity_settings"] = asdict(settings)
    return run_perplexity(ctx.model, ctx.tokenizer, ctx.checkpoint, settings)


SUITES: dict[str, Callable[[EvalContext], dict[str, Any]]] = {
    "algorithmic": suite_algorithmic, "needle": suite_needle, "perplexity": suite_perplexity}
SUITE_ALIASES: dict[str, str] = {"longctx": "needle"}


def resolve_suite(name: str) -> list[str]:
    """Suite names to run for `name` ("all" = every registered suite)."""
    name = SUITE_ALIASES.get(name, name)
    if name == "all":
        return list(SUITES)
    if name not in SUITES:
        raise UnknownNameError("suite", name, [*SUITES, *SUITE_ALIASES, "all"])
    return [name]


def newest_checkpoint(root: str | Path = "runs") -> Path:
    """The most recently written runs/*/best_model.pt (searched recursively)."""
    found = [Path(p) for p in glob.glob(os.path.join(str(root), "**", "best_model.pt"), recursive=True)]
    if not found:
        raise CheckpointError(f"no --checkpoint given and no {root}/*/best_model.pt found; train a model first "
                              f"(python train.py) or pass --checkpoint PATH")
    return max(found, key=lambda p: p.stat().st_mtime)


def load_for_eval(path: str | Path, device: str = "cpu", tokenizer: str | None = None,
                  overrides: dict[str, Any] | None = None) -> EvalContext:
    """Load checkpoint + model + tokenizer (the checkpoint's own unless one is named)."""
    ckpt = load_checkpoint(path)
    name = tokenizer or ckpt["tokenizer"]
    tok = load_tokenizer(name, tokenizer_json=ckpt.get("tokenizer_json") if name == ckpt["tokenizer"] else None)
    model = model_from_checkpoint(ckpt, device=device, tokenizer_name=tok.name)
    if overrides:
        model.apply_overrides(**overrides)
    model.eval()
    return EvalContext(model=model, tokenizer=tok, checkpoint=ckpt, checkpoint_path=Path(path))


def run_suites(ctx: EvalContext, suite: str, out_dir: str | Path) -> dict[str, Path]:
    """Run the suite(s) and write results_<suite>.json (and results_all.json for "all")."""
    names = resolve_suite(suite)
    ctx.options.setdefault("out_dir", str(out_dir))
    written: dict[str, Path] = {}
    payloads: dict[str, Any] = {}
    sha = file_sha256(ctx.checkpoint_path)
    t_all = time.time()
    for name in names:
        t0 = time.time()
        ctx.meta_extra = {}
        payload = SUITES[name](ctx)
        meta = suite_meta(ctx, sha, time.time() - t0)
        written[name] = write_results(out_dir, name, payload, meta)
        payloads[name] = payload
    if SUITE_ALIASES.get(suite, suite) == "all":
        meta = suite_meta(ctx, sha, time.time() - t_all)
        written["all"] = write_results(out_dir, "all", payloads, meta)
    return written


def suite_meta(ctx: EvalContext, sha: str, wall: float) -> dict[str, Any]:
    """Results metadata of one suite run (DESIGN contract 4)."""
    m = ctx.model
    p = next(m.parameters())
    desc = ctx.checkpoint["model"]
    return base_meta(checkpoint=str(ctx.checkpoint_path), checkpoint_sha256=sha, variant=desc["variant"],
                     size=desc["size"], params=m.num_params(), trainable_params=m.num_params(trainable_only=True),
                     frozen_params=m.num_frozen_params(), model_options=asdict(m.opts),
                     tokenizer=ctx.tokenizer.name, seed=ctx.options.get("seed", 0),
                     decoding={"strategy": "greedy", "cache": True}, device=str(p.device), dtype=str(p.dtype),
                     threads=torch.get_num_threads(),
                     train_step=ctx.checkpoint.get("step"), wall_time_s=wall, **ctx.meta_extra)
