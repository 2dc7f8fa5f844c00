"""Benchmark: greedy decoding with the cache vs without it, per variant, on CPU.

    python bench/decode_cache.py                                  # every variant, pico and micro
    python bench/decode_cache.py --model_sizes pico --variants baseline ssm --threads 1

For each (variant, size) a freshly initialised model (weights do not change the cost) continues
a seeded random prompt of `--prompt_len` tokens by `--new_tokens` tokens, greedily:
- cached: `unified.models.decoding.generate` (one prefill, then one token per step through the cache);
- uncached: the whole sequence so far is run through the model at every step (no cache), which
  is what decoding costs without incremental state.
Reported: tokens/s of each (generated tokens x batch / wall time, best of `--reps` runs after a
warm-up), the speed-up, and whether both produced the same tokens (they should: the cache is an
exact re-expression of the full forward, up to float rounding that can flip a near-tie).
Variants whose module fails to import are listed as such and skipped. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from unified.models import LanguageModel, create_model, variant_names  # noqa: E402
from unified.models.decoding import DecodeSettings, generate  # noqa: E402


@torch.no_grad()
def decode_uncached(model: LanguageModel, prompt: torch.Tensor, new_tokens: int) -> list[list[int]]:
    """Greedy continuation recomputing the full forward pass over the whole sequence each step."""
    seq = prompt.clone()
    for _ in range(new_tokens):
        nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, prompt.shape[1]:].tolist()


def decode_cached(model: LanguageModel, prompt: torch.Tensor, new_tokens: int) -> list[list[int]]:
    """Greedy continuation with the model's cache (the eval harness's path); no EOS stop."""
    gen = generate(model, prompt.tolist(), eos_id=-1, settings=DecodeSettings(max_new_tokens=new_tokens),
                   batch_size=prompt.shape[0])
    return gen.tokens


def best_time(fn, reps: int) -> tuple[float, list[list[int]]]:
    """Fastest wall time of `reps` calls of `fn` and its (last) result."""
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_one(variant: str, size: str, args: argparse.Namespace) -> dict:
    """One table row: tokens/s cached and uncached for `variant` at `size`."""
    model = create_model(variant, size).eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 256, (args.batch_size, args.prompt_len), generator=g)
    decode_cached(model, prompt[:, :16], 4)  # warm-up
    t_c, toks_c = best_time(lambda: decode_cached(model, prompt, args.new_tokens), args.reps)
    t_u, toks_u = best_time(lambda: decode_uncached(model, prompt, args.new_tokens), args.reps)
    n = args.batch_size * args.new_tokens
    same = sum(a == b for ra, rb in zip(toks_c, toks_u) for a, b in zip(ra, rb)) / n
    return {"variant": variant, "size": size, "params": model.num_params(),
            "cached tok/s": round(n / t_c, 1), "uncached tok/s": round(n / t_u, 1),
            "speed-up": round(t_u / t_c, 1), "same tokens": f"{same:.0%}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="*", default=None, help="default: every registered variant")
    p.add_argument("--model_sizes", dest="sizes", nargs="*", default=["pico", "micro"])
    p.add_argument("--sizes", dest="sizes", nargs="*", default=["pico", "micro"], help=argparse.SUPPRESS)
    p.add_argument("--prompt_len", type=int, default=256)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        variants = args.variants or variant_names()
    except Exception as exc:  # a half-written variant module breaks the registry import
        sys.exit(f"cannot import the variant registry: {type(exc).__name__}: {exc}")
    rows = []
    for size in args.sizes:
        for v in variants:
            try:
                rows.append(bench_one(v, size, args))
            except Exception as exc:  # report and continue: one broken variant should not hide the rest
                rows.append({"variant": v, "size": size, "error": f"{type(exc).__name__}: {exc}"[:120]})
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"\nprompt {args.prompt_len} tokens, {args.new_tokens} new tokens, batch {args.batch_size}, "
          f"{args.threads} thread(s), torch {torch.__version__}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
