"""Training tokens/s as train.py reports it, this checkout against another one (A/B).

    python bench/train_speed.py --variant hrnn --model_size micro --before /tmp/before
    python bench/train_speed.py --variant hrnn --model_size micro,nano --before /tmp/before --rounds 3

Each run is the checkout's own `train.py` in a fresh process (so each side has its own process
settings: threads, matmul precision, host memory), on the embedded procedural language data,
with validation only at the end; the figure is the median `tokens_per_s` of the train records
in its metrics.jsonl (the interval between two records: data, forward, backward, clipping,
AdamW), the first record left out as warm-up. Runs alternate between the checkouts, the order
flipped each round, so both see the same machine load; the speed-up is the median over rounds
of after / before. `--before` is any checkout of this project (`git worktree add DIR REV`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_tokens_per_s(repo: Path, variant: str, size: str, args: argparse.Namespace) -> list[float]:
    """The train records' tokens/s (after the first) of one train.py run of `repo`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, str(repo / "train.py"), "--variant", variant, "--model_size", size,
               "--batch_size", str(args.batch), "--seq_len", str(args.seq_len), "--max_steps", str(args.steps),
               "--log_every", str(args.log_every), "--eval_every", str(10 * args.steps), "--val_rows", "1",
               "--eval_samples", "1", "--lang_dataset", "procedural", "--output_dir", str(out)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise SystemExit(f"error: {repo}/train.py failed ({variant} {size}): {tail[0]}")
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["tokens_per_s"] for r in recs if r.get("kind") == "train"][1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--before", required=True, help="the other checkout (its train.py is run as it is)")
    p.add_argument("--variant", default="hrnn")
    p.add_argument("--model_size", default="micro", help="comma-separated model sizes")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--log_every", type=int, default=5, help="steps per train record (one tokens/s figure)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    before = Path(args.before).resolve()
    if not (before / "train.py").is_file():
        print(f"error: --before {args.before} has no train.py (give a checkout of this project)", file=sys.stderr)
        sys.exit(2)
    if min(args.batch, args.seq_len, args.rounds, args.log_every) < 1 or args.steps < 2 * args.log_every:
        print("error: --batch/--seq_len/--rounds/--log_every must be >= 1 and --steps >= 2 x --log_every "
              "(the first record is warm-up)", file=sys.stderr)
        sys.exit(2)
    sides = {"before": before, "after": ROOT}
    print(f"{args.variant}, batch {args.batch} x seq {args.seq_len}, {args.steps} steps per run, {args.rounds} "
          f"alternating rounds; before = {before}, after = {ROOT}\n")
    print("| variant | size | before tok/s | after tok/s | speed-up (median of rounds) | load (1 min) per round |")
    print("|---|---|---:|---:|---:|---|")
    for size in args.model_size.split(","):
        tps: dict[str, list[float]] = {"before": [], "after": []}
        ratios, loads = [], []
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            per_round = {}
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                per_round[side] = statistics.median(run_tokens_per_s(sides[side], args.variant, size, args))
                tps[side].append(per_round[side])
            ratios.append(per_round["after"] / per_round["before"])
            print(f"{size} round {r}: before {per_round['before']:,.0f}, after {per_round['after']:,.0f} tok/s, "
                  f"load {loads[-1]:.2f}", file=sys.stderr, flush=True)
        print(f"| {args.variant} | {size} | {statistics.median(tps['before']):,.0f} | {statistics.median(tps['after']):,.0f} "
              f"| {statistics.median(ratios):.2f}x | {', '.join(f'{x:.1f}' for x in loads)} |", flush=True)


if __name__ == "__main__":
    main()
