"""A/B training speed of the sequential recurrences: `hrnn`'s two-level GRU scan and the tanh
reservoir's loop, each with its hand-written backward through time ("fused", what the models
run) against the plain autograd loop it replaced ("reference", `unified/ops/*_naive.py`).

    python bench/recurrent_speed.py                                   # hrnn + reservoir, micro + nano
    python bench/recurrent_speed.py --rows hrnn --model_sizes micro --rounds 2 --steps 2   # quick look
    python bench/recurrent_speed.py --host_memory system        # glibc's default allocator behaviour

One model per (row, size); the two implementations are swapped into the model's module (the
name `bench/measure.py`'s loop share patches too) and timed in alternating rounds in the same
process, so both see the same machine load. A step is `bench/run.py`'s training step (fp32
forward, backward, clip, AdamW) at batch x seq_len; per round the median of `--steps` steps
after one warm-up; reported: the median over rounds of each implementation's tokens/s, the
median of the per-round ratios, the loop share of each (1 - median step time with the loop
replaced by an elementwise stand-in, timed every round too / its median step time) and the
1-minute load average at the start of each round.
Timings on shared CPUs are noisy; the ratio is the figure to read.
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402
from unified.ops.host_memory import host_memory_policy  # noqa: E402
from unified.ops.hrnn_scan_naive import hierarchical_scan_naive  # noqa: E402
from unified.ops.precision import set_matmul_precision  # noqa: E402
from unified.ops.tanh_scan_naive import tanh_scan_naive  # noqa: E402

REFERENCES = {"hrnn": hierarchical_scan_naive, "reservoir": tanh_scan_naive}


def _time(row: str, model, args: argparse.Namespace) -> float:
    """Median step seconds of the model as it is patched now."""
    return measure.train_step_times(model, args.batch, args.seq_len, "fp32", warmup=1, steps=args.steps)["median_step_s"]


def bench(row: str, size: str, args: argparse.Namespace) -> dict:
    """Alternating rounds of fused vs reference on one model, each round also timing the step with
    the loop replaced by `bench/measure.py`'s stand-in (its median gives both loop shares)."""
    mod_name, fn_name = measure.SEQUENTIAL_LOOPS[row]
    mod = importlib.import_module(mod_name)
    fused, reference = getattr(mod, fn_name), REFERENCES[row]
    torch.manual_seed(0)
    model = measure.build(row, size, args.seq_len)
    times: dict[str, list[float]] = {"fused": [], "reference": [], "stand-in": []}
    loads, ratios, shares = [], [], {}
    big = 1e6  # loop_share returns 1 - t_standin / big: recover t_standin, the step without the loop
    try:
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            order = ("reference", "fused") if r % 2 == 0 else ("fused", "reference")
            for impl in order:
                setattr(mod, fn_name, fused if impl == "fused" else reference)
                times[impl].append(_time(row, model, args))
            setattr(mod, fn_name, fused)
            loop = measure.loop_share(row, model, args.batch, args.seq_len, "fp32", args.steps, big)
            times["stand-in"].append((1.0 - loop) * big)
            ratios.append(times["reference"][-1] / times["fused"][-1])
            print(f"{row} {size} round {r}: reference {times['reference'][-1]:.3f} s, fused {times['fused'][-1]:.3f} s, "
                  f"stand-in {times['stand-in'][-1]:.3f} s, load {loads[-1]:.2f}", file=sys.stderr, flush=True)
        t_standin = statistics.median(times["stand-in"])
        for impl in ("reference", "fused"):
            shares[impl] = max(0.0, 1.0 - t_standin / statistics.median(times[impl]))
    finally:
        setattr(mod, fn_name, fused)
    tok = args.batch * args.seq_len
    return {"row": row, "size": size, "ref_tps": tok / statistics.median(times["reference"]),
            "fused_tps": tok / statistics.median(times["fused"]), "ratio": statistics.median(ratios),
            "ref_share": shares["reference"], "fused_share": shares["fused"], "loads": loads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", default="hrnn,reservoir", help=f"comma-separated, from {', '.join(REFERENCES)}")
    p.add_argument("--model_sizes", dest="sizes", default="micro,nano", help="comma-separated model sizes")
    p.add_argument("--sizes", dest="sizes", default="micro,nano", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (after one warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--host_memory", choices=("reuse", "system"), default="reuse",
                   help="freed host memory kept for reuse (what train.py sets, unified/ops/host_memory.py) or "
                        "glibc's default values set explicitly (mmap above 128 KiB; its dynamic threshold off)")
    args = p.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in rows if r not in REFERENCES]
    if bad or min(args.rounds, args.steps, args.batch, args.seq_len, args.threads) < 1:
        print(f"error: rows must be from {', '.join(REFERENCES)} (got {','.join(bad) or args.rows}) and "
              f"--rounds/--steps/--batch/--seq_len/--threads >= 1", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    choice = set_matmul_precision("auto")
    memory = host_memory_policy(args.host_memory)
    print(f"batch {args.batch} x seq {args.seq_len}, fp32 (matmul precision {choice.setting}), {args.threads} threads, "
          f"host memory {memory}, "
          f"{args.rounds} alternating rounds x median of {args.steps} steps, torch {torch.__version__}\n")
    print("| row | size | reference tok/s | fused tok/s | speed-up (median of rounds) | loop share reference | "
          "loop share fused | load (1 min) per round |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for size in args.sizes.split(","):
        for row in rows:
            r = bench(row, size, args)
            print(f"| {row} | {size} | {r['ref_tps']:,.0f} | {r['fused_tps']:,.0f} | {r['ratio']:.2f}x | "
                  f"{r['ref_share']:.0%} | {r['fused_share']:.0%} | {', '.join(f'{x:.1f}' for x in r['loads'])} |",
                  flush=True)


if __name__ == "__main__":
    main()
