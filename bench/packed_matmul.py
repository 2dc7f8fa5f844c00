"""Per-call time of a scan's small product x @ w.T: torch.mm (under "highest" and "medium")
against the weight packed once (`unified.ops.packed_matmul.PackedWeight`).

    python bench/packed_matmul.py                          # hrnn's micro / nano shapes, 2 threads
    python bench/packed_matmul.py --rows 1,8,64 --threads 1

Shapes (in, out) are those of hrnn's per-step products at micro (H = 256) and nano (H = 512):
the low recurrent weight (H, 3H), the fused high projection (H, 6H) and a backward product
(3H, H). Each figure is the mean of `--calls` calls after 30 warm-up calls, in microseconds.
The PackedWeight column is what the scans call: one row takes torch.mm under "highest" (its fallback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from unified.ops.packed_matmul import PackedWeight  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    """Mean microseconds per call of fn() after 30 warm-up calls."""
    for _ in range(30):
        fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="8", help="comma-separated row counts (the batch of a scan step)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=1000)
    a = p.parse_args()
    try:
        rows = [int(r) for r in a.rows.split(",")]
    except ValueError:
        rows = []
    if not rows or min(rows) < 1 or a.threads < 1 or a.calls < 1:
        print(f"error: --rows must be comma-separated integers >= 1 (got {a.rows!r}), --threads/--calls >= 1",
              file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(a.threads)
    print(f"{a.threads} threads, mean of {a.calls} calls, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}\n")
    print("| rows | in x out | torch.mm highest (us) | torch.mm medium (us) | PackedWeight.mm (us) | medium / PackedWeight |")
    print("|---:|---|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    for H in (256, 512):
        for k, n in ((H, 3 * H), (H, 6 * H), (3 * H, H)):
            w = torch.randn(n, k, generator=g)
            pw = PackedWeight(w)
            for b in rows:
                x = torch.randn(b, k, generator=g)
                t = {}
                for prec in ("highest", "medium"):
                    torch.set_float32_matmul_precision(prec)
                    t[prec] = per_call_us(lambda: torch.mm(x, w.t()), a.calls)
                torch.set_float32_matmul_precision("highest")
                t["packed"] = per_call_us(lambda: pw.mm(x), a.calls)
                print(f"| {b} | {k} x {n} | {t['highest']:.1f} | {t['medium']:.1f} | {t['packed']:.1f} | "
                      f"{t['medium'] / t['packed']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
