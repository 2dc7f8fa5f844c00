"""Benchmark: chunked SSD scan vs the naive sequential recurrence, forward + backward, on CPU.

    python bench/ssm_scan.py                 # all cases, prints a markdown table
    python bench/ssm_scan.py --threads 2 --lengths 256 1024 4096

Each (method, T) case runs in its own subprocess so that its peak memory can be read honestly:
peak memory is the growth of the process's peak resident set size (`resource.getrusage`
ru_maxrss) from just before the first forward pass to the end of the case, i.e. what the
forward + backward of that method added on top of the inputs. Times are the fastest of `reps`
runs (wall clock, and process CPU time summed over threads) after a short warm-up run on the
first 64 positions; the minimum is the least disturbed by other jobs on a shared machine. Shapes: batch 1, 8 heads of 32 channels (d_inner 256), d_state 32,
chunk 64. The naive method is the reference recurrence `unified.ops.ssd_naive` (one step per
token under autograd, what a per-token loop costs); the chunked method is `ssd_chunked`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

B, H, P, N, CHUNK = 1, 8, 32, 32, 64


def make_inputs(T: int, seed: int = 0) -> list:
    """Random scan inputs with gradients: x, dt, A, B, C."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, P, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(B, T, H, generator=g) - 2)
    A = -torch.empty(H).uniform_(1, 16, generator=g)
    Bm, Cm = torch.randn(B, T, N, generator=g), torch.randn(B, T, N, generator=g)
    return [t.requires_grad_() for t in (x, dt, A, Bm, Cm)]


def run_scan(method: str, inputs: list):
    """Forward pass of one method; returns (y, final_state)."""
    from unified.ops.ssd_naive import ssd_naive
    from unified.ops.ssd_scan import ssd_chunked

    x, dt, A, Bm, Cm = inputs
    if method == "chunked":
        return ssd_chunked(x, dt, A, Bm, Cm, CHUNK)
    return ssd_naive(x, dt, A, Bm, Cm)


def one_case(method: str, T: int, reps: int, threads: int) -> dict:
    """Time forward + backward of one method at length T; measure its peak-RSS growth."""
    import torch

    torch.set_num_threads(threads)
    warm, inputs = make_inputs(min(T, 64)), make_inputs(T)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu = [], []
    for run in [warm] + [inputs] * reps:
        for t in run:
            t.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        y, h = run_scan(method, run)
        (y.square().mean() + h.square().mean()).backward()
        if run is inputs:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "T": T, "seconds": min(times), "cpu_seconds": min(cpu), "reps": reps,
            "peak_mib": (rss1 - rss0) / 1024}


def reps_for(method: str, T: int) -> int:
    """Fewer repetitions where the sequential loop is slow."""
    if method == "naive":
        return 3 if T <= 256 else 2 if T <= 1024 else 1
    return 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each case")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case[0], int(args.case[1]), args.reps, args.threads)))
        return

    import torch

    from unified.ops.ssd_scan import ssd_chunked

    with torch.no_grad():  # sanity check: both methods compute the same thing
        inputs = make_inputs(256, seed=1)
        err = (run_scan("naive", inputs)[0] - ssd_chunked(*inputs, CHUNK)[0]).abs().max().item()
    load0 = os.getloadavg()
    rows = {}
    for T in args.lengths:
        for method in ("naive", "chunked"):
            cmd = [sys.executable, __file__, "--case", method, str(T), "--reps", str(reps_for(method, T)),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[(method, T)] = json.loads(out.strip().splitlines()[-1])
    load1 = os.getloadavg()

    print(f"torch {torch.__version__}, {args.threads} threads, batch {B}, heads {H} x headdim {P}, "
          f"d_state {N}, chunk {CHUNK}; max |naive - chunked| at T=256: {err:.1e}")
    print(f"load average (1 min) before / after: {load0[0]:.2f} / {load1[0]:.2f} on {os.cpu_count()} cores\n")
    print("| T | naive fwd+bwd (s) | chunked fwd+bwd (s) | speed-up (wall) | speed-up (CPU time) "
          "| naive peak (MiB) | chunked peak (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for T in args.lengths:
        n, c = rows[("naive", T)], rows[("chunked", T)]
        print(f"| {T} | {n['seconds']:.3f} | {c['seconds']:.4f} | {n['seconds'] / c['seconds']:.0f}x "
              f"| {n['cpu_seconds'] / c['cpu_seconds']:.0f}x | {n['peak_mib']:.0f} | {c['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
