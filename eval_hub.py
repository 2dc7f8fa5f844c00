"""Evaluate a checkpoint: python eval_hub.py --checkpoint runs/nano_act/best_model.pt --suite all

Thin wrapper over `unified.evals.hub`. Without --checkpoint the newest runs/*/best_model.pt is used.
Results go to --out_dir (default: the checkpoint's folder) as results_<suite>.json, or as
results_<suite>@<tag>.json when an option changes the model or the grid (--override, --K,
--tasks, --limit, --ood, --seed, needle and perplexity grid options).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from unified.cli import ArgumentParser, parse_overrides, run_cli
from unified.data.tasks import resolve_tasks
from unified.devices import check_device
from unified.errors import ConfigError
from unified.evals.algorithmic import parse_ood_grid
from unified.evals.hub import (SUITES, load_for_eval, newest_checkpoint, resolve_suite, run_suites,
                               suite_eval_options)
from unified.evals.needle import NeedleSettings
from unified.evals.perplexity import PerplexitySettings
from unified.evals.results import options_tag, results_name
from unified.ops.precision import MATMUL_PRECISIONS, set_matmul_precision
from unified.progress import set_quiet
from unified.text.textcache import set_offline_if_unreachable
from unified.train.checkpoint import ensure_writable_dir


def _number_list(kind: type, flag: str):
    """argparse type: comma- or space-separated numbers (so `--depths 0,0.5,1` and `--depths 0 0.5 1` both work)."""

    def parse(text: str) -> list:
        return [kind(x) for x in text.replace(",", " ").split()]  # ValueError -> argparse's one-line error

    parse.__name__ = f"{kind.__name__} list for {flag}"
    return parse


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Evaluate a checkpoint on the algorithmic / needle / perplexity suites.")
    p.add_argument("--checkpoint", default=None, help="path to a .pt checkpoint (default: newest runs/*/best_model.pt)")
    p.add_argument("--suite", default="algorithmic", help=f"one of {', '.join([*SUITES, 'all'])}")
    p.add_argument("--out_dir", default=None, help="default: the checkpoint's folder")
    p.add_argument("--tasks", nargs="*", default=None, help="algorithmic tasks (default all)")
    p.add_argument("--limit", type=int, default=None,
                   help="examples per algorithmic grid cell (default 100); also caps the needle samples per cell "
                        "when --needle_samples is not given")
    p.add_argument("--ood", nargs="+", default=None, metavar="TASK=V1,V2",
                   help="algorithmic: OOD values of the named tasks instead of their defaults, e.g. "
                        "--ood parity=16,32,64,128 addition=5,6")
    p.add_argument("--seed", type=int, default=0, help="which held-out examples are drawn")
    p.add_argument("--batch_size", type=int, default=64)
    nd, pd = NeedleSettings(), PerplexitySettings()
    p.add_argument("--needle_lengths", "--context_lengths", dest="context_lengths", nargs="+",
                   type=_number_list(int, "--needle_lengths"), default=None,
                   help="needle: absolute prompt lengths in tokens, e.g. 1024,2048,4096 (default: "
                        f"{','.join(f'{f:g}' for f in nd.length_factors)} x the checkpoint's training seq_len)")
    p.add_argument("--needle_factors", nargs="+", type=_number_list(float, "--needle_factors"), default=None,
                   help="needle: prompt lengths as multiples of the checkpoint's training seq_len "
                        f"(default {','.join(f'{f:g}' for f in nd.length_factors)})")
    p.add_argument("--depths", nargs="+", type=_number_list(float, "--depths"), default=None,
                   help=f"needle: needle depths in [0, 1] (default {' '.join(f'{d:g}' for d in nd.depths)})")
    p.add_argument("--needle_samples", type=int, default=None,
                   help=f"needle: prompts per (length, depth) cell (default {nd.samples})")
    p.add_argument("--text_file", default=None,
                   help="perplexity: held-out UTF-8 text (default: the validation split of the run's language data)")
    p.add_argument("--ppl_dataset", default=None,
                   help="perplexity: validation split of an HF dataset named as for train.py --lang_dataset "
                        "(tinystories, wikitext103, openwebtext, minipile, hf:<repo>[:<config>]); "
                        "needs the network or the HF cache")
    p.add_argument("--ppl_max_tokens", type=int, default=pd.max_tokens,
                   help="perplexity: score at most this many tokens of the text (0 = all)")
    p.add_argument("--ppl_prefix", choices=["bos", "eos"], default=pd.prefix,
                   help="perplexity: token each window's first token is conditioned on (training puts EOS, "
                        "not BOS, before language documents)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr is no terminal)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (0 = torch's default). Decoding small models is fastest on one "
                        "thread, and extra threads slow it down badly when the cores are shared")
    p.add_argument("--matmul_precision", default="auto", choices=MATMUL_PRECISIONS,
                   help="float32 matmul path; auto: the fast oneDNN path ('medium') where its error vs float64 "
                        "is float32-level, else 'highest'; cached decoding steps always use 'highest' on CPU")
    p.add_argument("--tokenizer", default=None, help="must match the checkpoint's (default: the checkpoint's)")
    p.add_argument("--K", type=int, default=None, help="latent/act: thought iterations at evaluation")
    p.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="change an evaluation-time model option (e.g. n_loops=8), repeatable")
    return p


def checked_options(args) -> dict:
    """The evaluation options of parsed `args`, checked (one-line ConfigError for a nonsense
    value): the dict `EvalContext.options` holds, with the model overrides unchecked against the
    variant (that needs the checkpoint, see `unified.evals.hub.check_overrides`)."""
    resolve_suite(args.suite)
    for flag in ("limit", "needle_samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {value}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    check_device(args.device)
    tasks = [t for item in (args.tasks or []) for t in item.split(",") if t] or None
    ood = parse_ood_grid(args.ood, resolve_tasks(tasks))
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = torch's default), got {args.threads}")
    if args.ppl_max_tokens < 0:
        raise ConfigError(f"--ppl_max_tokens must be >= 0 (0 = all), got {args.ppl_max_tokens}")
    flat = {name: [x for part in getattr(args, name) for x in part] if getattr(args, name) else None
            for name in ("context_lengths", "depths", "needle_factors")}
    NeedleSettings(context_lengths=flat["context_lengths"], depths=flat["depths"] or NeedleSettings().depths,
                   length_factors=flat["needle_factors"] or NeedleSettings().length_factors).validate()
    overrides = parse_overrides(args.override)
    if args.K is not None:
        overrides["K"] = args.K
    return {"overrides": overrides, "tasks": tasks, "limit": args.limit, "seed": args.seed,
            "batch_size": args.batch_size, "ood": ood, "context_lengths": flat["context_lengths"],
            "depths": flat["depths"], "needle_factors": flat["needle_factors"], "needle_samples": args.needle_samples,
            "text_file": args.text_file, "ppl_dataset": args.ppl_dataset, "ppl_max_tokens": args.ppl_max_tokens,
            "ppl_prefix": args.ppl_prefix}


def results_names(argv: list[str]) -> dict[str, str]:
    """The results file each suite of `eval_hub.py argv` writes, e.g. {"algorithmic":
    "results_algorithmic@limit=10.json"}, without loading anything (for the ladder's
    "already evaluated?" check). Bad options raise the same one-line errors as the CLI."""
    args = build_parser().parse_args(argv)
    options = checked_options(args)
    names = resolve_suite(args.suite)
    if args.suite == "all":
        names = [*names, "all"]
    return {name: results_name(name, options_tag(suite_eval_options(options, name))) for name in names}


def main(argv: list[str] | None = None, check_only: bool = False) -> int:
    """Evaluate; with `check_only`, stop after checking the options (ladder.py checks its
    --eval_args this way before any training starts)."""
    args = build_parser().parse_args(argv)
    set_offline_if_unreachable()
    options = checked_options(args)
    if check_only:
        return 0
    set_quiet(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_matmul_precision(args.matmul_precision, args.device)
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = newest_checkpoint()
        print(f"evaluating the newest checkpoint: {ckpt}")
    torch.manual_seed(args.seed)
    ctx = load_for_eval(ckpt, device=args.device, tokenizer=args.tokenizer, overrides=options.pop("overrides"))
    out_dir = args.out_dir or str(ctx.checkpoint_path.parent)
    ensure_writable_dir(out_dir, "--out_dir")  # fail now, not after the evaluation
    ctx.options.update({**options, "out_dir": out_dir})  # ctx.options["overrides"]: the checked ones
    written = run_suites(ctx, args.suite, out_dir)
    for name, path in written.items():
        print(f"{name}: wrote {path}")
        if name == "perplexity":
            res = json.loads(path.read_text())["perplexity"]
            if not res.get("available", True):
                print(f"note: perplexity not measured: {res['reason']}")
    if "needle" in written:
        plot = json.loads(written["needle"].read_text())["needle"].get("plot")
        if plot and (Path(out_dir) / plot).is_file():
            print(f"needle: drew {Path(out_dir) / plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
