"""Evaluate a checkpoint: python eval_hub.py --checkpoint runs/nano_act/best_model.pt --suite all

Thin wrapper over `unified.evals.hub`. Without --checkpoint the newest runs/*/best_model.pt is used.
Results go to --out_dir (default: the checkpoint's folder) as results_<suite>.json.
"""
from __future__ import annotations

import torch

from unified.cli import ArgumentParser, parse_overrides, run_cli, set_offline_if_unreachable
from unified.evals.hub import SUITE_ALIASES, SUITES, load_for_eval, newest_checkpoint, resolve_suite, run_suites


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Evaluate a checkpoint on the algorithmic / needle / perplexity suites.")
    p.add_argument("--checkpoint", default=None, help="path to a .pt checkpoint (default: newest runs/*/best_model.pt)")
    p.add_argument("--suite", default="algorithmic", help=f"one of {', '.join([*SUITES, *SUITE_ALIASES, 'all'])}")
    p.add_argument("--out_dir", default=None, help="default: the checkpoint's folder")
    p.add_argument("--tasks", nargs="*", default=None, help="algorithmic tasks (default all)")
    p.add_argument("--limit", type=int, default=None, help="examples per grid cell (default 100)")
    p.add_argument("--seed", type=int, default=0, help="which held-out examples are drawn")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--tokenizer", default=None, help="must match the checkpoint's (default: the checkpoint's)")
    p.add_argument("--K", type=int, default=None, help="latent/act: thought iterations at evaluation")
    p.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="change an evaluation-time model option (e.g. n_loops=8), repeatable")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_offline_if_unreachable()
    resolve_suite(args.suite)
    if args.limit is not None and args.limit < 1:
        from unified.errors import ConfigError

        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = newest_checkpoint()
        print(f"evaluating the newest checkpoint: {ckpt}")
    overrides = parse_overrides(args.override)
    if args.K is not None:
        overrides["K"] = args.K
    torch.manual_seed(args.seed)
    ctx = load_for_eval(ckpt, device=args.device, tokenizer=args.tokenizer, overrides=overrides)
    tasks = [t for item in (args.tasks or []) for t in item.split(",") if t] or None
    ctx.options = {"tasks": tasks, "limit": args.limit, "seed": args.seed, "batch_size": args.batch_size}
    out_dir = args.out_dir or str(ctx.checkpoint_path.parent)
    written = run_suites(ctx, args.suite, out_dir)
    for name, path in written.items():
        print(f"{name}: wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
