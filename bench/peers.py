"""This project side by side with its peers, on one machine, in one run (issue 20).

    python bench/peers.py --nanogpt DIR --relsm DIR            # both peers, then RESULTS.md
    python bench/peers.py --nanogpt DIR --full_iters 2000      # + time-to-loss at the full budget

- **nanoGPT** (a karpathy/nanoGPT checkout; its own train.py and model.py): its README's CPU
  quick-start (4 layers, 4 heads, width 128, block 64, batch 12, lr 1e-3, dropout 0, eval_iters
  20) against train.py at that shape on the same Tiny Shakespeare validation cut (the last 5%, as
  `split_documents` cuts it; nanoGPT a character vocabulary, ours the byte tokenizer: the same
  nats per character for this ASCII text). Per step: `--rounds` runs of `--iters` steps, sides
  alternating, each run's median step (nanoGPT's logged iteration times without the evaluation
  iterations; ours from metrics.jsonl without the first window). Time-to-loss (`--full_iters`):
  the training time (validation left out on both sides) ours needs to reach nanoGPT's final
  validation loss, beside nanoGPT's training time for its whole run.
- **ReLSM** (a jpturcotte/ReLSM checkout; its own `create_model`): each variant both projects
  have, nano, vocab 512, fp32, `--relsm_shape`; one training step (forward with targets,
  backward, clip, AdamW) in a fresh process per (side, variant, round), sides alternating.

Nothing is vendored: a peer whose path is not given is skipped with a line saying so. Ratios are
peer / ours (> 1: this project is faster); each side runs with `--threads` threads, the 1-minute
load average beside every number. The section goes to bench/RESULTS.md's hand-kept part.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unified.cli import ArgumentParser, run_cli  # noqa: E402
from unified.errors import ConfigError  # noqa: E402
from unified.text.documents import read_documents, split_documents  # noqa: E402

from peer_logs import (MARKER, SECTION, RunLog, parse_metrics, parse_nanogpt_log, ratio_table,  # noqa: E402,F401
                       time_to_loss, write_section)

SHARED_VARIANTS = ("baseline", "shared_loop", "latent", "act", "ssm", "ssm_mem")
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
RELSM_FILES = ("model.py",)
QUICKSTART = {"block_size": 64, "batch_size": 12, "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}
DATASET = "peers_char"  # the data folder written under the work dir for nanoGPT


def checkout(path: str | None, kind: str, files: Sequence[str]) -> Path | None:
    """The checkout folder of a peer, or None when not given; a path that is not a folder holding
    `files` is a ConfigError naming what is missing."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"--{kind} {path!r} is not a folder; give the path of a {kind} checkout")
    missing = [f for f in files if not (p / f).is_file()]
    if missing:
        raise ConfigError(f"--{kind} {path!r} has no {', '.join(missing)}; give the root of a {kind} checkout")
    return p.resolve()


def load_average() -> float:
    """The 1-minute load average (/proc/loadavg)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---- nanoGPT -----------------------------------------------------------------------------------
def prepare_nanogpt_data(text: Path, work: Path) -> Path:
    """nanoGPT's shakespeare_char files (train.bin, val.bin, meta.pkl) for `text` under
    work/data/peers_char, split where this project splits it (`split_documents`: the last 5%)."""
    import numpy as np

    train, val = split_documents(read_documents(text))
    train_text, val_text = "\n".join(train), "\n".join(val)
    chars = sorted(set(train_text + val_text))
    stoi = {c: i for i, c in enumerate(chars)}
    out = work / "data" / DATASET
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train_text), ("val", val_text)):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(out / f"{name}.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return out


def nanogpt_command(repo: Path, out_dir: Path, iters: int, eval_interval: int) -> list[str]:
    """nanoGPT's CPU quick-start command (its README) on the prepared data, float32."""
    flags = {"device": "cpu", "compile": False, "eval_iters": 20, "log_interval": 1, **QUICKSTART,
             "max_iters": iters, "lr_decay_iters": iters, "eval_interval": eval_interval, "dataset": DATASET,
             "out_dir": str(out_dir), "dtype": "float32", "always_save_checkpoint": True}
    return [sys.executable, str(repo / "train.py"), str(repo / "config/train_shakespeare_char.py"),
            *(f"--{k}={v}" for k, v in flags.items())]


# ---- this project ------------------------------------------------------------------------------
def ours_command(text: Path, out_dir: Path, iters: int, eval_every: int) -> list[str]:
    """train.py at nanoGPT's quick-start shape on `text` (language only, lr 1e-3, dropout 0)."""
    shape = [f"--set={k}" for k in ("n_layers=4", "n_heads=4", "d_model=128", "dropout=0")]
    return [sys.executable, str(ROOT / "train.py"), "--variant", "baseline", "--model_size", "micro", *shape,
            "--seq_len", "64", "--batch_size", "12", "--lr", "1e-3", "--lang_data", str(text), "--alg_tokens", "0",
            "--lang_alg_fraction", "0", "--max_steps", str(iters), "--eval_every", str(eval_every),
            "--log_every", "10", "--alg_tasks", "copy", "--eval_samples", "1", "--val_rows", "1",
            "--output_dir", str(out_dir)]


def run_logged(cmd: list[str], cwd: Path, threads: int) -> str:
    """Run a side's command with `threads` threads; its stdout (a failure is a ConfigError with the tail)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ConfigError(f"{Path(cmd[1]).name} in {cwd} failed (exit {proc.returncode}): {tail[0]}")
    return proc.stdout


def nanogpt_pair(repo: Path, text: Path, work: Path, iters: int, eval_every: int, threads: int,
                 tag: str) -> tuple[RunLog, RunLog]:
    """One nanoGPT run and then one of ours, `iters` steps each (RunLogs: nanoGPT, ours)."""
    theirs_out, ours_out = work / f"nanogpt_{tag}", work / f"ours_{tag}"
    stdout = run_logged(nanogpt_command(repo, theirs_out, iters, eval_every), work, threads)
    theirs = parse_nanogpt_log(stdout, eval_every)
    run_logged(ours_command(text, ours_out, iters, eval_every), work, threads)
    return theirs, parse_metrics(ours_out / "metrics.jsonl")


# ---- ReLSM -------------------------------------------------------------------------------------
def relsm_worker(side: str, repo: str | None, variant: str, shape: tuple[int, int], steps: int,
                 threads: int) -> dict[str, Any]:
    """In a fresh process: median ms of one training step of `variant` at nano, vocab 512, fp32,
    built by ReLSM's create_model (side "relsm") or this project's (side "ours", precision `auto`
    as the Trainer sets it). One warm-up step; forward with targets, backward, clip 1.0, AdamW."""
    import torch

    torch.set_num_threads(threads)
    batch, seq = shape
    torch.manual_seed(0)
    ids = torch.randint(0, 512, (batch, seq + 1))
    if side == "relsm":
        sys.path.insert(0, str(repo))
        from model import create_model  # ReLSM's own factory (its checkout's model.py)

        model = create_model("nano", vocab_size=512, max_seq_len=seq + 1, variant=variant)
        for mod in model.modules():  # dropout 0 like ours (its create_model cannot take dropout=)
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
        loss_of = lambda: model(ids[:, :-1], labels=ids[:, :-1])[1]  # noqa: E731 (it shifts labels itself)
    else:
        from unified.models import create_model
        from unified.ops.precision import set_matmul_precision

        set_matmul_precision("auto")
        model = create_model(variant, "nano", vocab_size=512, max_seq_len=max(seq, 512), dropout=0.0)
        opt = model.configure_optimizer(lr=1e-4, weight_decay=0.1)
        loss_of = lambda: model(ids[:, :-1], targets=ids[:, 1:]).loss  # noqa: E731
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss_of().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "load": load_average()}


def relsm_case(side: str, repo: Path, variant: str, shape: tuple[int, int], steps: int, threads: int) -> float:
    """`relsm_worker` in its own process; its median step in ms."""
    cmd = [sys.executable, __file__, "--worker", side, "--relsm", str(repo), "--variant", variant,
           "--relsm_shape", f"{shape[0]}x{shape[1]}", "--relsm_steps", str(steps), "--threads", str(threads)]
    out = run_logged(cmd, ROOT, threads)
    return float(json.loads(out.strip().splitlines()[-1])["median_ms"])


# ---- report ------------------------------------------------------------------------------------
def run_nanogpt(a: Any, repo: Path | None, text: Path, work: Path) -> str:
    """The nanoGPT part of the section: per-step rounds, then the time-to-loss runs ("" if skipped)."""
    if repo is None:
        print("skipped nanoGPT: --nanogpt DIR not given")
        return ""
    prepare_nanogpt_data(text, work)
    (work / "configurator.py").unlink(missing_ok=True)
    (work / "configurator.py").symlink_to(repo / "configurator.py")  # nanoGPT reads it from its working dir
    rows, theirs_ms, ours_ms, loads = [], [], [], []
    for r in range(a.rounds):
        load = load_average()
        theirs, ours = nanogpt_pair(repo, text, work, a.iters, a.iters + 1, a.threads, f"r{r}")
        theirs_ms.append(theirs.median_ms())
        ours_ms.append(ours.median_ms())
        loads.append(f"{load:.2f}-{load_average():.2f}")
        print(f"round {r + 1}: nanoGPT {theirs_ms[-1]:.1f} ms/step, ours {ours_ms[-1]:.1f} (load {loads[-1]})")
        rows.append({"peer": "nanoGPT", "case": f"quick-start, round {r + 1}", "peer_ms": theirs_ms[-1],
                     "ours_ms": ours_ms[-1], "load": loads[-1]})
    rows.append({"peer": "nanoGPT", "case": f"median of {a.rounds} rounds", "peer_ms": statistics.median(theirs_ms),
                 "ours_ms": statistics.median(ours_ms), "load": ", ".join(loads)})
    cmd = " ".join(["python bench/peers.py --nanogpt DIR", *(f"--{k} {getattr(a, k)}" for k in
                                                            ("rounds", "iters", "full_iters", "threads"))])
    out = [f"nanoGPT CPU quick-start shape, {a.threads} thread(s), {a.iters} steps per run, sides alternating "
           f"(`{cmd}`):", "", ratio_table(rows)]
    if a.full_iters:
        load = load_average()
        theirs, ours = nanogpt_pair(repo, text, work, a.full_iters, a.eval_every, a.threads, "full")
        target, reached = theirs.final_val(), None
        reached = time_to_loss(ours, target) if target is not None else None
        theirs_s = theirs.train_s_at[max(theirs.train_s_at)]
        ours_s = ours.train_s_at[max(ours.train_s_at)]
        when = f"{reached[1]:.0f} s (step {reached[0]})" if reached else f"not reached in {a.full_iters} steps"
        out += ["", f"Time-to-loss, {a.full_iters} steps each, validation every {a.eval_every} (load "
                f"{load:.2f}-{load_average():.2f}); training time without validation on both sides:", "",
                "| side | ms/step (median) | final val loss (nats/char) | training time, whole run | "
                "time to nanoGPT's final val loss |", "|---|---:|---:|---:|---|",
                f"| nanoGPT | {theirs.median_ms():.1f} | {target:.4f} | {theirs_s:.0f} s | {theirs_s:.0f} s |",
                f"| ours | {ours.median_ms():.1f} | {ours.final_val():.4f} | {ours_s:.0f} s | {when} |", "",
                "nanoGPT's validation loss is its estimate from 20 random batches of 12 x 64 (`eval_iters=20`); "
                "ours is every window of the same validation text (`val_lang_loss`)."]
    return "\n".join(out)


def run_relsm(a: Any, repo: Path | None, shape: tuple[int, int]) -> str:
    """The ReLSM part of the section: each variant, the two sides alternating ("" if skipped)."""
    if repo is None:
        print("skipped ReLSM: --relsm DIR not given")
        return ""
    rows, load0 = [], load_average()
    for v in a.variants.split(","):
        theirs, ours, loads = [], [], []
        for r in range(a.rounds):
            load = load_average()
            theirs.append(relsm_case("relsm", repo, v, shape, a.relsm_steps, a.relsm_threads))
            ours.append(relsm_case("ours", repo, v, shape, a.relsm_steps, a.relsm_threads))
            loads.append(f"{load:.2f}")
        print(f"{v}: ReLSM {statistics.median(theirs):.0f} ms/step, ours {statistics.median(ours):.0f}")
        rows.append({"peer": "ReLSM", "case": f"{v} nano", "peer_ms": statistics.median(theirs),
                     "ours_ms": statistics.median(ours), "load": ", ".join(loads)})
    cmd = (f"python bench/peers.py --relsm DIR --rounds {a.rounds} --relsm_shape {a.relsm_shape} "
           f"--relsm_threads {a.relsm_threads} --relsm_steps {a.relsm_steps}")
    return "\n".join([f"ReLSM, nano, vocab 512, fp32, batch x seq {a.relsm_shape}, {a.relsm_threads} threads, median "
                      f"of {a.rounds} alternating rounds of {a.relsm_steps} steps each (load {load0:.2f} at the "
                      f"start; `{cmd}`):", "", ratio_table(rows)])


def parse_shape(text: str) -> tuple[int, int]:
    """BATCHxSEQ, e.g. 2x128."""
    m = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not m or int(m[1]) < 1 or int(m[2]) < 2:
        raise ConfigError(f"--relsm_shape must be BATCHxSEQ with batch >= 1 and seq >= 2 (e.g. 2x128), got {text!r}")
    return int(m[1]), int(m[2])


def build_parser() -> ArgumentParser:
    """bench/peers.py's options."""
    p = ArgumentParser(description="Time this project against nanoGPT and ReLSM checkouts, side by side.")
    p.add_argument("--nanogpt", help="path of a karpathy/nanoGPT checkout (skipped when not given)")
    p.add_argument("--relsm", help="path of a jpturcotte/ReLSM checkout (skipped when not given)")
    p.add_argument("--text", default=str(ROOT.parent / "shared/data/tinyshakespeare.txt"), help="Tiny Shakespeare")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the per-step timings")
    p.add_argument("--iters", type=int, default=150, help="steps of each nanoGPT-shape per-step run")
    p.add_argument("--full_iters", type=int, default=0, help="steps of the one time-to-loss run per side (0: none)")
    p.add_argument("--eval_every", type=int, default=250, help="validation interval of the time-to-loss runs")
    p.add_argument("--threads", type=int, default=1, help="threads per side (nanoGPT quick-start: 1)")
    p.add_argument("--relsm_threads", type=int, default=2, help="threads per side for the ReLSM cases")
    p.add_argument("--relsm_shape", default="2x128", help="BATCHxSEQ of the ReLSM cases")
    p.add_argument("--relsm_steps", type=int, default=3, help="timed steps per ReLSM case (after one warm-up)")
    p.add_argument("--variants", default=",".join(SHARED_VARIANTS), help="ReLSM variants to time")
    p.add_argument("--work", help="scratch folder for data and runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "bench/RESULTS.md"), help="file to write the section to, or none")
    p.add_argument("--worker", choices=("relsm", "ours"), help=argparse.SUPPRESS)  # one ReLSM case (internal)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    return p


def check_args(a: Any) -> None:
    """Ranges of the numeric options (one-line ConfigErrors)."""
    for name in ("rounds", "iters", "threads", "relsm_threads", "relsm_steps", "eval_every"):
        if getattr(a, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.full_iters < 0:
        raise ConfigError(f"--full_iters must be >= 0, got {a.full_iters}")
    bad = [v for v in a.variants.split(",") if v not in SHARED_VARIANTS]
    if bad:
        raise ConfigError(f"--variants: {bad[0]!r} is not a variant both projects have; accepted: "
                          f"{', '.join(SHARED_VARIANTS)}")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        print(json.dumps(relsm_worker(a.worker, a.relsm, a.variant, parse_shape(a.relsm_shape), a.relsm_steps,
                                      a.threads)))
        return 0
    check_args(a)
    shape = parse_shape(a.relsm_shape)
    nanogpt, relsm = checkout(a.nanogpt, "nanogpt", NANOGPT_FILES), checkout(a.relsm, "relsm", RELSM_FILES)
    text = Path(a.text)
    if nanogpt is not None and not text.is_file():
        raise ConfigError(f"--text {a.text!r} does not exist; give Tiny Shakespeare (../shared/data/SOURCES.md)")
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(part for part in (run_nanogpt(a, nanogpt, text, work), run_relsm(a, relsm, shape)) if part)
    print(body)
    if a.results != "none" and body.strip():
        write_section(Path(a.results), body)
        print(f"wrote the peers section of {a.results}")
    return 0


if __name__ == "__main__":
    run_cli(main)
