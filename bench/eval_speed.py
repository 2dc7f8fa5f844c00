"""Wall time of each evaluation suite on a checkpoint, optionally against another checkout.

    python bench/eval_speed.py --checkpoint runs/micro_baseline/best_model.pt --threads 2
    python bench/eval_speed.py --checkpoint CKPT --reference /tmp/old_tree --rounds 2   # before/after

Each measurement runs in its own process: it loads the checkpoint, runs the algorithmic, needle
and perplexity suites with their default grids (as `eval_hub.py --suite all` does, without
writing files or drawing the needle plot) and prints one JSON line: wall seconds per suite,
CPU seconds per suite and in all, the 1-minute load average before and after, threads, and a
digest of each payload. With `--reference DIR` the same runs alternate between this tree and DIR (an older
checkout, e.g. `git archive <commit> | tar -x -C DIR`), round by round, so both see similar
load; equal digests mean identical results (perplexity's may differ in the last float digits). Timings on shared cores are noisy: note the load.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("algorithmic", "needle", "perplexity")


def measure(checkpoint: str, threads: int, suites: list[str]) -> dict:
    """Run the suites in this process; the timing record (see the module docstring)."""
    import torch

    torch.set_num_threads(threads)
    from unified.data.tasks import resolve_tasks
    from unified.evals.algorithmic import AlgorithmicSettings, run_algorithmic
    from unified.evals.needle import NeedleSettings, run_needle
    from unified.evals.perplexity import PerplexitySettings, run_perplexity
    from unified.evals.results import strip_volatile
    from unified.ops.precision import set_matmul_precision
    from unified.text.tokenizer import load_tokenizer
    from unified.train.checkpoint import load_checkpoint, model_from_checkpoint

    set_matmul_precision("auto")
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    ckpt = load_checkpoint(checkpoint)
    tok = load_tokenizer(ckpt["tokenizer"], tokenizer_json=ckpt.get("tokenizer_json"))
    model = model_from_checkpoint(ckpt, tokenizer_name=tok.name).eval()
    seq_len = (ckpt.get("train_config") or {}).get("seq_len")
    train_len = seq_len if isinstance(seq_len, int) and seq_len > 0 else None
    runs = {"algorithmic": lambda: run_algorithmic(model, tok, resolve_tasks(None), AlgorithmicSettings()),
            "needle": lambda: run_needle(model, tok, NeedleSettings(train_len=train_len)),
            "perplexity": lambda: run_perplexity(model, tok, ckpt, PerplexitySettings())}
    import unified

    record: dict = {"tree": str(Path(unified.__file__).parent.parent), "threads": threads, "load_s": round(time.perf_counter() - t0, 2)}
    for name in suites:
        t, c = time.perf_counter(), time.process_time()
        payload = runs[name]()
        record[name] = round(time.perf_counter() - t, 2)
        record[f"{name}_cpu"] = round(time.process_time() - c, 2)
        text = json.dumps(strip_volatile(payload), sort_keys=True, default=str)
        record[f"{name}_digest"] = hashlib.sha256(text.encode()).hexdigest()[:12]
    record.update(total=round(time.perf_counter() - t0, 2), cpu=round(time.process_time() - cpu0, 2),
                  load_before=round(load0, 2), load_after=round(os.getloadavg()[0], 2))
    return record


def run_in(tree: Path, args: argparse.Namespace) -> dict:
    """`measure` in a fresh process whose imports come from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--checkpoint", args.checkpoint, "--threads",
           str(args.threads), "--suites", ",".join(args.suites), "--_child"]
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"error: the run in {tree} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--suites", default=",".join(SUITES), type=lambda s: [x for x in s.split(",") if x])
    p.add_argument("--reference", default=None, help="another checkout to time against, round by round")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    bad = [s for s in args.suites if s not in SUITES]
    if bad or not Path(args.checkpoint).is_file():
        raise SystemExit(f"error: --suites takes {', '.join(SUITES)}; --checkpoint must be a file")
    if args._child:
        sys.path.insert(0, os.getcwd())
        print(json.dumps(measure(args.checkpoint, args.threads, args.suites)))
        return
    trees = [ROOT] + ([Path(args.reference).resolve()] if args.reference else [])
    for r in range(args.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            print(json.dumps({"round": r, **run_in(tree, args)}), flush=True)


if __name__ == "__main__":
    main()
