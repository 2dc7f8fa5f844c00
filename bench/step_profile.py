"""Profile the Trainer's training step at nanoGPT's CPU quick-start shape (issue 20).

    python bench/step_profile.py                      # median step (wall and CPU time) + per-op table
    python bench/step_profile.py --repo /tmp/before   # the same for another checkout (A/B: alternate)
    python bench/step_profile.py --nanogpt DIR        # nanoGPT's model and optimizer, same shape, in-process

The step is the real one: `unified.train.trainer.Trainer` built from train.py's flags (baseline,
4 layers x 128, 4 heads, seq 64, batch 12, lr 1e-3, dropout 0, Tiny Shakespeare, language only,
the matmul precision `auto` picks), timed between successive calls of `forward_backward`
(data, forward, backward, clipping, AdamW, logging); with `--profile` the ops of the steps after
the first 10 are tabulated by self CPU time (torch.profiler). One thread unless `--threads`.
With `--nanogpt DIR` the step is nanoGPT's instead (its `GPT` at the quick-start shape, vocab 65,
its `configure_optimizers`; forward, backward, clip 1.0, AdamW on a fixed random batch): the CPU
time per step is the number to compare on a shared machine, where wall time also counts waiting.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", default=str(ROOT), help="checkout whose Trainer is profiled")
    p.add_argument("--steps", type=int, default=60, help="steps timed (the first 10 are warm-up, not counted; >= 12)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="also print the per-op table")
    p.add_argument("--text", default=str(ROOT.parent / "shared/data/tinyshakespeare.txt"))
    p.add_argument("--nanogpt", help="time nanoGPT's model from this checkout instead")
    a = p.parse_args()
    if a.steps < 12:
        p.error(f"--steps must be >= 12 (the first 10 are warm-up), got {a.steps}")
    if a.nanogpt:
        return nanogpt_step(a.nanogpt, a.steps, a.threads)
    sys.path.insert(0, a.repo)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    from unified.train.flags import add_train_arguments, config_from_args, given_options
    from unified.train.trainer import Trainer

    out = tempfile.mkdtemp(prefix="step-profile-")
    args = add_train_arguments(argparse.ArgumentParser()).parse_args(
        ["--variant", "baseline", "--model_size", "micro", "--set", "n_layers=4", "--set", "n_heads=4", "--set",
         "d_model=128", "--set", "dropout=0", "--seq_len", "64", "--batch_size", "12", "--lr", "1e-3",
         "--lang_data", a.text, "--alg_tokens", "0", "--lang_alg_fraction", "0", "--max_steps", str(a.steps),
         "--eval_every", str(10 * a.steps), "--alg_tasks", "copy", "--eval_samples", "1", "--val_rows", "1",
         "--val_lang_tokens", "64", "--output_dir", out + "/run"])
    trainer = Trainer(config_from_args(args), given=given_options(args))
    wall, cpu, last = [], [], None
    inner = Trainer.forward_backward
    prof = None

    def timed(self):  # called once per step: the time since the previous call is one whole step
        nonlocal last
        now = (time.perf_counter(), time.process_time())
        if last is not None:
            wall.append(now[0] - last[0])
            cpu.append(now[1] - last[1])
        last = now
        if prof is not None:
            prof.step()
        return inner(self)

    Trainer.forward_backward = timed
    if a.profile:
        from torch.profiler import ProfilerActivity, profile, schedule

        with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=5, warmup=5, active=a.steps - 12)) as prof:
            trainer.run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48))
    else:
        trainer.run()
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"{a.repo}: median step {1e3 * statistics.median(wall[10:]):.1f} ms wall, "
          f"{1e3 * statistics.median(cpu[10:]):.1f} ms CPU over {len(wall[10:])} steps; load {load}")


def nanogpt_step(repo: str, steps: int, threads: int) -> None:
    """Median wall and CPU ms of nanoGPT's training step at its CPU quick-start shape."""
    sys.path.insert(0, repo)
    import torch
    from model import GPT, GPTConfig  # nanoGPT's model.py

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    ids = torch.randint(0, 65, (12, 65))
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    wall, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        model(x, y)[1].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"nanoGPT {repo}: median step {1e3 * statistics.median(wall[10:]):.1f} ms wall, "
          f"{1e3 * statistics.median(cpu[10:]):.1f} ms CPU over {len(wall[10:])} steps; load {load}")


if __name__ == "__main__":
    main()
