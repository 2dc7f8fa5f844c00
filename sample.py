"""Generate text from a checkpoint: python sample.py --checkpoint runs/micro_baseline/best_model.pt --prompt "Once upon a time"

Thin wrapper over `unified.evals.sample_text`: tokens are printed as they are decoded, through the
variant's cache. Greedy by default (--temperature 0); with --temperature > 0 sampling is seeded
(--seed), so the same command prints the same text. --interactive reads one prompt per line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from unified.cli import ArgumentParser, run_cli
from unified.devices import check_device
from unified.errors import ConfigError, DataError
from unified.evals.hub import check_override_names, load_for_eval, newest_checkpoint
from unified.evals.sample_text import PREFIXES, encode_prompt, make_generator, stream_sample, validate_settings
from unified.models.decoding import DecodeSettings
from unified.models.optioncheck import parse_overrides
from unified.text.textcache import set_offline_if_unreachable


def build_parser() -> ArgumentParser:
    d = DecodeSettings()
    p = ArgumentParser(description="Generate text from a checkpoint, streaming tokens as they are decoded.")
    p.add_argument("--checkpoint", default=None, help="a .pt checkpoint (default: the newest runs/*/best_model.pt)")
    p.add_argument("--prompt", default=None, help="prompt text (default: empty, i.e. a new document)")
    p.add_argument("--prompt_file", default=None, help="read the prompt from this UTF-8 file")
    p.add_argument("--num_samples", type=int, default=1, help="continuations per prompt")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy (deterministic)")
    p.add_argument("--top_k", type=int, default=d.top_k, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top_p", type=float, default=d.top_p, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling seed (same seed, same text)")
    p.add_argument("--prefix", default="auto", choices=PREFIXES,
                   help="token put before the prompt; auto: BOS before an algorithmic prompt (e.g. 'add 12+34='), "
                        "EOS before other text (how training data starts a document)")
    p.add_argument("--interactive", action="store_true", help="read prompts from stdin, one per line, until EOF")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (0 = torch's default)")
    p.add_argument("--tokenizer", default=None, help="must match the checkpoint's (default: the checkpoint's)")
    p.add_argument("--set", dest="model_overrides", action="append", metavar="KEY=VALUE",
                   help="change an evaluation-time model option (e.g. n_loops=8), repeatable")
    p.add_argument("--override", dest="model_overrides", action="append", help=argparse.SUPPRESS)
    return p


def read_prompt(args) -> str:
    """The prompt text from --prompt or --prompt_file (not both)."""
    if args.prompt is not None and args.prompt_file is not None:
        raise ConfigError("give either --prompt or --prompt_file, not both")
    if args.prompt_file is None:
        return args.prompt or ""
    path = Path(args.prompt_file)
    if not path.is_file():
        raise DataError(f"--prompt_file {str(path)!r} does not exist; give a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except UnicodeDecodeError:
        raise DataError(f"--prompt_file {str(path)!r} is not UTF-8 text") from None


def main(argv: list[str] | None = None) -> int:
    """Check every option (before the checkpoint is read), then print the continuations."""
    args = build_parser().parse_args(argv)
    settings = DecodeSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, seed=args.seed)
    validate_settings(settings)
    if args.num_samples < 1:
        raise ConfigError(f"--num_samples must be >= 1, got {args.num_samples}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = torch's default), got {args.threads}")
    if args.interactive and (args.prompt is not None or args.prompt_file is not None):
        raise ConfigError("--interactive reads prompts from stdin; drop --prompt / --prompt_file")
    overrides = parse_overrides(args.model_overrides)
    check_override_names(overrides)
    prompt = "" if args.interactive else read_prompt(args)
    device = check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_offline_if_unreachable()
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = newest_checkpoint()
        print(f"sampling from the newest checkpoint: {ckpt}", file=sys.stderr)
    ctx = load_for_eval(ckpt, device=str(device), tokenizer=args.tokenizer, overrides=overrides)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def run(text: str) -> None:  # each prompt restarts the seeded stream: same prompt, same samples
        ids = encode_prompt(text, ctx.tokenizer, args.prefix)
        gen = make_generator(settings, device)
        for k in range(args.num_samples):
            if args.num_samples > 1:
                write(f"--- sample {k + 1}/{args.num_samples}\n")
            write(text)
            stream_sample(ctx.model, ctx.tokenizer, ids, settings, gen, write)
            write("\n")

    if not args.interactive:
        run(prompt)
        return 0
    print("interactive: one prompt per line; end with Ctrl-D", file=sys.stderr)
    while True:
        if sys.stdin.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        run(line.rstrip("\n"))


if __name__ == "__main__":
    run_cli(main)
