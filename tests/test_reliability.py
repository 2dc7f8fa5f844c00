"""Exact resume after SIGKILL and SIGTERM, atomic checkpoints, safe loading of every variant's
checkpoints, mixed precision and torch.compile (docs/design.md#contract-5; issues 10 and 15). Bad inputs are
in test_bad_inputs.py, the resume contract and the run lock in test_resume_contract.py, torchrun in
test_distributed.py."""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY_OVERRIDES, run_cli, tiny_model
from unified.errors import WriteError
from unified.train.checkpoint import (atomic_save, atomic_write_text, load_checkpoint, model_from_checkpoint,
                                      remove_stale_temps, save_checkpoint)
from unified.train.runlog import append_metrics, read_metrics

# 32 steps mixing algorithmic and procedural-language rows (the language phase starts at step
# ~14), dropout on (so the RNG state must be restored), and a log window (3) that straddles the
# checkpoints (every 8): a resumed run must reproduce every logged number bit for bit.
RESUME_ARGS = ["--model_size", "pico", "--max_steps", "32", "--eval_every", "8", "--log_every", "3",
               "--batch_size", "4", "--seq_len", "64", "--eval_samples", "1", "--total_tokens", "100000",
               "--alg_tasks", "parity,copy,addition", "--lang_dataset", "procedural", "--alg_tokens", "4096",
               "--set", "dropout=0.1"]
VOLATILE = {"tokens_per_s"}


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0", "UNIFIED_CACHE": str(tmp_path / "cache")}


def _train(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _logged(run: Path) -> list[dict]:
    """Train and val records as a resumed-aware reader sees them, without timing fields."""
    return [{k: v for k, v in r.items() if k not in VOLATILE}
            for r in read_metrics(run / "metrics.jsonl") if r["kind"] in ("train", "val")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kill_after(victims: dict[int, subprocess.Popen], runs: dict[int, Path], after: dict[int, int],
                deadline: float) -> None:
    """Send each victim its signal once a checkpoint exists and a train record past its step was
    logged; all victims are watched together (watching one at a time let the other finish first)."""
    waiting = dict(victims)
    while waiting and time.time() < deadline:
        for sig, proc in list(waiting.items()):
            run = runs[sig]
            if proc.poll() is not None:
                del waiting[sig]
            elif (run / "last.pt").is_file() and any(r["kind"] == "train" and r["step"] > after[sig]
                                                     for r in read_metrics(run / "metrics.jsonl")):
                proc.send_signal(sig)
                del waiting[sig]
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_and_sigterm_then_resume_reproduce_the_uninterrupted_run(tmp_path: Path) -> None:
    """Two runs killed at random points, one with SIGKILL (no cleanup at all) and one with SIGTERM
    (exits 143 after removing its temporary files and lock), then resumed: every logged record and
    the final weights are bit-identical to an uninterrupted run's."""
    env = _env(tmp_path)
    rng = random.Random()
    points = {signal.SIGKILL: rng.randint(8, 15), signal.SIGTERM: rng.randint(16, 26)}  # after ckpt 8 / 16
    ref = _train([*RESUME_ARGS, "--output_dir", "ref"], tmp_path, env)  # runs alongside the killed ones
    victims = {sig: _train([*RESUME_ARGS, "--output_dir", f"run{int(sig)}"], tmp_path, env) for sig in points}
    deadline = time.time() + 300
    _kill_after(victims, {sig: tmp_path / f"run{int(sig)}" for sig in points}, points, deadline)
    for sig, proc in victims.items():
        run, code = tmp_path / f"run{int(sig)}", proc.wait(timeout=60)
        err = proc.stderr.read()
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM), (points, code, err[-1500:])
        if sig == signal.SIGTERM:  # a clean stop: one line, lock and temporary files gone
            frames = {part.strip() for line in err.split("\n") for part in line.split("\r")}
            assert "terminated" in frames and "Traceback" not in err, err[-1500:]
            assert not (run / ".train.lock").exists() and not list(run.glob(".*.tmp"))
        assert not (run / "summary.json").exists()
        ckpt_step = load_checkpoint(run / "last.pt")["step"]
        assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) > ckpt_step  # replaced on resume
        r = run_cli("train.py", *RESUME_ARGS, "--output_dir", run.name, "--resume", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]

    ref_log = _logged(tmp_path / "ref")
    assert len(ref_log) == 15  # 11 train + 4 val records
    for sig in points:
        run = tmp_path / f"run{int(sig)}"
        assert _logged(run) == ref_log, (sig, points)  # exact: losses, grad norms, lr, validation metrics
        for name in ("last.pt", "best_model.pt"):
            a, b = load_checkpoint(tmp_path / "ref" / name), load_checkpoint(run / name)
            assert a["step"] == b["step"] and a["best_step"] == b["best_step"]
            assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 32 and summary["final_loss"] == ref_log[-2]["loss"]


def _checkpoint(path: Path, step: int) -> None:
    model = tiny_model("baseline")
    save_checkpoint(path, model, "byte", step=step, train_config={"seed": 0})


@pytest.mark.parametrize("fail_in", ["torch.save", "os.replace"])
def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch, fail_in: str) -> None:
    """A save that dies half-way (a kill inside torch.save, or before the rename) leaves last.pt
    exactly as it was, loadable, and no temporary file behind."""
    path = tmp_path / "last.pt"
    _checkpoint(path, step=1)
    before = _sha(path)
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        f.truncate(100)  # half-written
        raise KeyboardInterrupt("killed during torch.save")

    def dying_replace(src, dst):
        raise KeyboardInterrupt("killed before os.replace")

    if fail_in == "torch.save":
        monkeypatch.setattr(torch, "save", dying_save)
    else:
        monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _checkpoint(path, step=2)
    monkeypatch.undo()
    assert _sha(path) == before and load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_sigkill_during_repeated_saves_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    """A real SIGKILL at an arbitrary moment of a save loop: last.pt is always a whole checkpoint;
    an orphaned temporary file is cleaned up by remove_stale_temps (called on --resume)."""
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from unified.train.checkpoint import atomic_save
        big = torch.randn(2_000_000)
        i = 0
        while True:
            atomic_save({{"format": "unified-checkpoint-v1", "i": i, "big": big}}, {str(tmp_path / 'last.pt')!r})
            i += 1
            print(i, flush=True)
    """)
    for delay in (0.35, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.stdout.readline().strip() == "1"  # at least one complete save
        time.sleep(delay)
        proc.kill()
        proc.wait()
        ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
        assert ckpt["big"].shape == (2_000_000,) and ckpt["i"] >= 0
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_remove_stale_temps_only_touches_save_temporaries(tmp_path: Path) -> None:
    for name in (".last.pt.abc123.tmp", ".best_model.pt.x.tmp", "last.pt", "notes.tmp", ".hidden"):
        (tmp_path / name).write_text("x")
    removed = {p.name for p in remove_stale_temps(tmp_path)}
    assert removed == {".last.pt.abc123.tmp", ".best_model.pt.x.tmp"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "last.pt", "notes.tmp"]


def test_torn_metrics_line_does_not_swallow_the_resume_marker(tmp_path: Path) -> None:
    """A kill in the middle of a metrics line must not glue the next record (the resume marker)
    onto it: the marker stays readable and the replaced records are dropped."""
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"kind": "train", "step": 4, "loss": 1.0})
    append_metrics(path, {"kind": "train", "step": 8, "loss": 2.0})
    with open(path, "a") as f:
        f.write('{"kind": "train", "step": 12, "lo')  # torn by SIGKILL
    append_metrics(path, {"kind": "resume", "step": 4})
    append_metrics(path, {"kind": "train", "step": 8, "loss": 3.0})
    assert [(r["kind"], r["step"], r.get("loss")) for r in read_metrics(path)] == [
        ("train", 4, 1.0), ("resume", 4, None), ("train", 8, 3.0)]


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor))


def test_compiled_model_checkpoint_is_plain_and_loads_into_an_uncompiled_model(tmp_path: Path) -> None:
    """State dicts are taken from the module inside torch.compile, so the keys carry no
    `_orig_mod.` prefix; the whole checkpoint loads with weights_only=True. (The eager backend
    wraps exactly like inductor and needs no C++ compiler; test_compile_run uses inductor.)"""
    torch.manual_seed(0)
    model = tiny_model("baseline")
    compiled = torch.compile(model, backend="eager")
    x = torch.randint(0, 61, (2, 16))
    compiled(x, targets=x)
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_checkpoint(tmp_path / "c.pt", compiled, "byte", step=1, train_config={"lr": 1e-3, "seed": 0},
                    rng={"torch": torch.get_rng_state()})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # the safe loader accepts it as is
    assert _plain(raw) and not any(k.startswith("_orig_mod.") for k in raw["state_dict"])
    plain = model_from_checkpoint(load_checkpoint(tmp_path / "c.pt"))
    assert not hasattr(plain, "_orig_mod")
    model.eval(), plain.eval()
    assert torch.equal(plain(x).logits, model(x).logits)


@pytest.mark.parametrize("variant", sorted(TINY_OVERRIDES))
def test_every_variants_checkpoint_passes_the_load_checks_and_reloads_exactly(tmp_path: Path, variant: str) -> None:
    """The checks of load_checkpoint (format fields, options typed, the declared model built on
    the meta device and its shapes compared with the stored tensors) accept every variant's own
    checkpoint, and the rebuilt model computes the same logits."""
    torch.manual_seed(0)
    model = tiny_model(variant).eval()
    save_checkpoint(tmp_path / "m.pt", model, "byte", step=3)
    plain = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt")).eval()
    x = torch.randint(0, 61, (2, 16))
    assert torch.equal(plain(x).logits, model(x).logits)


def test_failed_write_removes_its_temporary_file_and_names_the_file(tmp_path: Path, monkeypatch) -> None:
    """A write error (here ENOSPC from os.fsync) is a one-line WriteError; the old file stays."""
    path = tmp_path / "config.json"
    atomic_write_text(path, "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=r"could not write .*config.json' \(No space left on device\); the previous"):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


PICO_SHORT = ["--model_size", "pico", "--max_steps", "4", "--eval_every", "4", "--log_every", "1",
              "--batch_size", "2", "--seq_len", "32", "--eval_samples", "1", "--lang_dataset", "none",
              "--alg_tasks", "parity,copy"]


def _finite_run(run: Path, steps: int) -> dict:
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert len(losses) == steps and all(isinstance(v, float) and math.isfinite(v) for v in losses), losses
    summary = json.loads((run / "summary.json").read_text())
    assert math.isfinite(summary["best_val_loss"])
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_run_finishes_with_finite_loss(tmp_path: Path, dtype: str) -> None:
    r = run_cli("train.py", *PICO_SHORT, "--dtype", dtype, "--output_dir", "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = _finite_run(tmp_path / "run", 4)
    assert summary["dtype"] == dtype
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
    if dtype == "fp16":  # the loss scaler is saved so a resumed fp16 run continues its scale
        assert ckpt["scaler"]["scale"] > 0


def _cxx_compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++") or shutil.which("cc")


@pytest.mark.slow
@pytest.mark.skipif(_cxx_compiler() is None, reason="torch.compile (inductor) on CPU needs a C++ compiler "
                                                    "(g++/c++/cc); none on PATH")
def test_compile_run_finishes_and_its_checkpoint_loads_uncompiled(tmp_path: Path) -> None:
    env = {"TORCHINDUCTOR_COMPILE_THREADS": "1"}  # the default kernel cache makes reruns fast
    r = run_cli("train.py", *PICO_SHORT, "--compile", "--set", "n_layers=1", "--output_dir", "run",
                cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    _finite_run(tmp_path / "run", 4)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["compile"] is True
    model = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best_model.pt"))
    assert not hasattr(model, "_orig_mod") and model.cfg.n_layers == 1
