"""Evaluate a checkpoint: python eval_hub.py --checkpoint runs/nano_act/best_model.pt --suite all

Thin wrapper over `unified.evals.hub` (its options: `unified.evals.flags`). Without --checkpoint
the newest runs/*/best_model.pt is used. Results go to --output_dir (default: the checkpoint's
folder) as results_<suite>.json, or as results_<suite>@<tag>.json when an option changes the
model or the grid (--set, --tasks, --limit, --ood, --seed, needle and perplexity grid options).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from unified.cli import ArgumentParser, run_cli
from unified.evals.flags import add_eval_arguments, eval_settings
from unified.evals.hub import SUITES, load_for_eval, newest_checkpoint, run_suites
from unified.ops.host_memory import reuse_freed_host_memory
from unified.ops.precision import set_matmul_precision
from unified.progress import set_quiet
from unified.text.textcache import set_offline_if_unreachable
from unified.train.checkpoint import ensure_writable_dir


def build_parser() -> ArgumentParser:
    """eval_hub.py's parser: `unified.evals.flags.add_eval_arguments` with one-line usage errors."""
    return add_eval_arguments(ArgumentParser(
        description=f"Evaluate a checkpoint on the {' / '.join(SUITES)} suites."))


def main(argv: list[str] | None = None) -> int:
    """Check every option, load the checkpoint, run the suite(s), write their results files."""
    args = build_parser().parse_args(argv)
    settings = eval_settings(args)  # every name and value checked before anything is read
    set_offline_if_unreachable()
    set_quiet(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_matmul_precision(args.matmul_precision, args.device)
    reuse_freed_host_memory()  # freed blocks kept for the next batch (unified.ops.host_memory)
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = newest_checkpoint()
        print(f"evaluating the newest checkpoint: {ckpt}")
    torch.manual_seed(args.seed)
    ctx = load_for_eval(ckpt, device=args.device, tokenizer=args.tokenizer, overrides=settings.overrides)
    output_dir = settings.output_dir or str(ctx.checkpoint_path.parent)
    ensure_writable_dir(output_dir, "--output_dir")  # fail now, not after the evaluation
    ctx.settings = replace(settings, overrides=ctx.settings.overrides, output_dir=output_dir)  # the checked overrides
    written = run_suites(ctx, args.suite, output_dir)
    for name, path in written.items():
        print(f"{name}: wrote {path}")
        if name == "perplexity":
            res = json.loads(path.read_text())["perplexity"]
            if not res.get("available", True):
                print(f"note: perplexity not measured: {res['reason']}")
    if "needle" in written:
        plot = json.loads(written["needle"].read_text())["needle"].get("plot")
        if plot and (Path(output_dir) / plot).is_file():
            print(f"needle: drew {Path(output_dir) / plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
