"""Tokens/s of the tanh (sequential) vs linear (diagonalised, chunked parallel scan) reservoir.

    python bench/reservoir_speed.py                 # micro scale, markdown table, ~2 minutes on 2 cores
    python bench/reservoir_speed.py --threads 1 --rows tanh,linear

Training = forward + backward of a (batch, seq_len) window; decoding = prefill a prompt, then
one token per call through the cache (what `unified.models.decoding` does). The baseline transformer
row is a reference at the same scale. Build time includes drawing the frozen weights (eigvals
for tanh, a full eigendecomposition for linear). Timings on shared CPUs are noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unified.models import create_model  # noqa: E402

ROWS = {"tanh": ("reservoir", dict(reservoir_mode="tanh")),
        "tanh_leaky": ("reservoir", dict(reservoir_mode="tanh", leak_rate=0.5)),
        "linear": ("reservoir", dict(reservoir_mode="linear")),
        "liquid": ("liquid", {}),
        "baseline": ("baseline", {})}


def bench_row(variant: str, opts: dict, args: argparse.Namespace) -> dict:
    """Build one model and time its training step and cached decoding."""
    t0 = time.perf_counter()
    model = create_model(variant, args.size, **opts)
    build = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.cfg.vocab_size, (args.batch, args.seq_len + 1), generator=g)
    model.train()
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        model.zero_grad(set_to_none=True)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    train_tps = args.batch * args.seq_len / (sum(times) / len(times))
    model.eval()
    with torch.no_grad():
        cache = model.init_cache(args.batch)
        out = model(ids[:, : args.prompt], cache=cache)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(args.decode):
            out = model(tok, cache=out.cache)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        decode_tps = args.batch * args.decode / (time.perf_counter() - t0)
    return dict(build_s=build, train_tps=train_tps, decode_tps=decode_tps,
                params=model.num_params(), frozen=model.num_frozen_params(),
                state=model.state_size(args.prompt + args.decode))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_size", dest="size", default="micro")
    p.add_argument("--size", dest="size", default="micro", help=argparse.SUPPRESS)
    p.add_argument("--rows", default="tanh,linear,baseline", help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"size {args.size}, batch {args.batch}, train seq_len {args.seq_len}, decode {args.decode} tokens "
          f"after a {args.prompt}-token prompt, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| row | build s | train tok/s (fwd+bwd) | decode tok/s | params | frozen | state floats |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.rows.split(","):
        variant, opts = ROWS[name]
        r = bench_row(variant, opts, args)
        print(f"| {name} | {r['build_s']:.1f} | {r['train_tps']:,.0f} | {r['decode_tps']:,.0f} | "
              f"{r['params'] / 1e6:.2f}M | {r['frozen'] / 1e6:.2f}M | {r['state']:,} |", flush=True)


if __name__ == "__main__":
    main()
