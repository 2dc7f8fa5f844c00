"""Multi-process training: `torchrun --nproc_per_node=2 train.py` on CPU (gloo) trains exactly like
one process with the same global batch; only rank 0 writes and validates; per-rank RNG resumes."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, run_cli
from unified.train.checkpoint import load_checkpoint
from unified.train.config import TrainConfig
from unified.train.runlog import read_metrics
from unified.train.trainer import train

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this torch build")

# Algorithmic rows (answer-only supervision, so ranks hold different numbers of supervised
# tokens), then the language phase (procedural text, 85% of rows) from step 3; two micro-batches
# per step.
BASE = ["--model_size", "pico", "--max_steps", "6", "--eval_every", "3", "--log_every", "1", "--seq_len", "64",
        "--grad_accum", "2", "--eval_samples", "1", "--alg_tasks", "parity,copy,addition", "--total_tokens", "100000",
        "--lang_dataset", "procedural", "--alg_tokens", "1536"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {"UNIFIED_CACHE": str(tmp_path / "cache")}


def torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc_per_node=N train.py args` (= torchrun)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0", "UNIFIED_CACHE": str(cwd / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == kind]


def _close(a: float, b: float, rel: float = 2e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path) -> None:
    one = run_cli("train.py", *BASE, "--batch_size", "4", "--output_dir", "one", cwd=tmp_path, env=_env(tmp_path))
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(*BASE, "--batch_size", "2", "--output_dir", "two", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done: 6 steps") == 1  # only rank 0 reports

    a, b = tmp_path / "one", tmp_path / "two"
    # only rank 0 writes: the same files, nothing extra (no second metrics writer, no probes)
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())
    ta, tb = _records(a, "train"), _records(b, "train")
    va, vb = _records(a, "val"), _records(b, "val")
    assert len(ta) == len(tb) == 6 and len(va) == len(vb) == 2  # rank 0 alone validated
    assert {r["phase"] for r in ta} >= {"algorithmic", "language"}
    for ra, rb in zip(ta, tb):
        assert ra["tokens"] == rb["tokens"] and ra["lr"] == rb["lr"]
        assert _close(ra["loss"], rb["loss"]) and _close(ra["grad_norm"], rb["grad_norm"]), (ra, rb)
    for ra, rb in zip(va, vb):
        assert _close(ra["val_loss"], rb["val_loss"]) and _close(ra["val_lang_loss"], rb["val_lang_loss"])
    wa, wb = load_checkpoint(a / "last.pt")["state_dict"], load_checkpoint(b / "last.pt")["state_dict"]
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["tokens_per_step"] == 2 * 64 * 2 * 2  # batch x seq x accum x world
    assert json.loads((b / "summary.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_distributed_run_stops_together_on_nan_and_resumes_every_rank_exactly(tmp_path: Path) -> None:
    """Dropout on: each rank has its own dropout stream, saved per rank in last.pt. A run stopped by
    a non-finite loss (every rank sees the all-reduced loss, so all stop) and resumed continues
    exactly like an uninterrupted 2-process run."""
    args = [*BASE, "--batch_size", "2", "--set", "dropout=0.1"]
    ref = torchrun(*args, "--output_dir", "ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    stopped = torchrun(*args, "--output_dir", "run", "--debug_nan_step", "4", cwd=tmp_path)
    assert stopped.returncode != 0
    assert stopped.stderr.count("error: non-finite loss (nan) at step 4") == 2  # both ranks, cleanly
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng"]["ranks"]) == 2
    assert not torch.equal(ckpt["rng"]["ranks"][0]["torch"], ckpt["rng"]["ranks"][1]["torch"])
    resumed = torchrun(*args, "--output_dir", "run", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rs]  # noqa: E731
    for kind in ("train", "val"):
        assert strip(_records(tmp_path / "run", kind)) == strip(_records(tmp_path / "ref", kind))


def test_grad_accum_and_batch_split_give_the_same_training(tmp_path: Path) -> None:
    """The objective is per supervised token of the whole step, so 2 micro-batches of 2 rows train
    like 1 micro-batch of 4 rows (a mean of per-micro-batch means would not: rows carry different
    numbers of answer tokens). Validation loss is per token too, so it does not depend on batching."""
    common = dict(model_size="pico", max_steps=4, eval_every=2, log_every=1, seq_len=64, eval_samples=1,
                  alg_tasks="parity,copy,addition", lang_dataset="none", total_tokens=100_000)
    train(TrainConfig.from_flat(**common, batch_size=4, grad_accum=1, output_dir=str(tmp_path / "a")))
    train(TrainConfig.from_flat(**common, batch_size=2, grad_accum=2, output_dir=str(tmp_path / "b")))
    for kind, key in (("train", "loss"), ("train", "grad_norm"), ("val", "val_loss")):
        xa = [r[key] for r in _records(tmp_path / "a", kind)]
        xb = [r[key] for r in _records(tmp_path / "b", kind)]
        assert len(xa) == len(xb) > 0 and all(_close(x, y) for x, y in zip(xa, xb)), (key, xa, xb)


@pytest.mark.parametrize("variant", ["baseline", "act"])
def test_step_objective_has_the_gradients_of_the_model_loss_for_one_batch(tmp_path: Path, variant: str) -> None:
    """With one process and one micro-batch the per-token objective is exactly the model's loss
    (cross-entropy mean + auxiliary loss, e.g. ACT's ponder cost): same value, same gradients."""
    from unified.train.trainer import Trainer

    cfg = TrainConfig.from_flat(variant=variant, model_size="pico", batch_size=3, seq_len=48, lang_dataset="none",
                                alg_tasks="parity,copy", max_steps=2, output_dir=str(tmp_path / "r"),
                                model_overrides={"K": 2} if variant == "act" else {})
    t = Trainer(cfg)
    loss, aux = t.forward_backward()
    grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    t.optimizer.zero_grad(set_to_none=True)
    x, y = t.curriculum.batch(0, t.rows_for(0))
    out = t.model(x, targets=y)
    out.loss.backward()
    assert ("aux_loss" in aux) == (variant == "act")
    assert _close(loss, float(out.loss.detach()), rel=1e-6)
    assert set(grads) == {n for n, p in t.model.named_parameters() if p.grad is not None}
    assert all(torch.allclose(grads[n], p.grad, rtol=1e-5, atol=1e-8) for n, p in t.model.named_parameters()
               if p.grad is not None)
