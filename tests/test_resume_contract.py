"""The resume contract, the non-finite guard and one writer per run folder (issue 15):
- a diverging --lr stops before the NaN update, the checkpoints stay finite, and --resume with a
  lower --lr continues, the new rate used by the scheduler and recorded in config.json's history;
- a run stopped before its first checkpoint restarts with --resume;
- a second train.py into a folder in use is refused with the holder's pid; ladder.py forwards
  SIGTERM to its child and waits for it;
- a non-finite validation loss stops the run without writing a checkpoint.
Refusals of mismatched options are in the bad-input table (test_bad_inputs.py)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_forkserver import ForkServer
from helpers import ROOT, tiny_model
from unified.errors import TrainingError
from unified.train.checkpoint import load_checkpoint
from unified.train.config import TrainConfig, lr_factor
from unified.train.resume import first_nonfinite
from unified.train.runlock import LOCK_NAME
from unified.train.runlog import read_metrics
from unified.train.trainer import Trainer, train

P = ["--model_size", "pico", "--log_every", "1", "--batch_size", "2", "--seq_len", "64", "--eval_samples", "1",
     "--lang_dataset", "none", "--alg_tasks", "parity"]


@pytest.fixture(scope="module")
def cli():
    server = ForkServer()
    yield server
    server.close()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def _train_records(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


def _error(r: subprocess.CompletedProcess) -> str:
    lines = [x for line in r.stderr.split("\n") for x in line.split("\r") if x.startswith("error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-1500:]
    return lines[0]


@pytest.mark.slow
def test_divergence_stops_before_the_update_and_a_lower_lr_resume_continues(cli: ForkServer, tmp_path: Path) -> None:
    r = cli.run("train.py", *P, "--max_steps", "4", "--eval_every", "4", "--lr", "1e-3", "--output_dir", "run",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    run = tmp_path / "run"
    # extend to 12 steps at a learning rate that diverges; no checkpoint is due before step 12
    err = _error(cli.run("train.py", "--output_dir", "run", "--resume", "--lr", "1e6", "--max_steps", "12",
                         "--eval_every", "100", cwd=tmp_path))
    assert "non-finite" in err and "training stopped before the update" in err
    assert "last good checkpoint kept (last.pt, step 4, in run); --resume with a lower --lr continues" in err
    last = load_checkpoint(run / "last.pt")
    assert last["step"] == 4 and all(bool(torch.isfinite(t).all()) for t in last["state_dict"].values())

    r = cli.run("train.py", "--output_dir", "run", "--resume", "--lr", "5e-4", "--eval_every", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 5e-4 and config["max_steps"] == 12 and config["eval_every"] == 4
    assert config["arguments"]["lr"] == 1e-3 and config["arguments"]["max_steps"] == 4  # the original arguments
    assert [h["resumed_at_step"] for h in config["history"]] == [4, 4]
    assert config["history"][0]["changed"] == {"lr": {"from": 1e-3, "to": 1e6}, "max_steps": {"from": 4, "to": 12},
                                               "eval_every": {"from": 4, "to": 100}}
    assert config["history"][1]["changed"] == {"lr": {"from": 1e6, "to": 5e-4}, "eval_every": {"from": 100, "to": 4}}
    recs = _train_records(run)
    assert [r["step"] for r in recs] == list(range(1, 13)) and all(math.isfinite(r["loss"]) for r in recs)
    warmup, ratio = config["warmup_steps"], config["min_lr_ratio"]
    for rec in recs:  # the scheduler uses the new rate from the resume point on, the old one before it
        base, total = (1e-3, 4) if rec["step"] <= 4 else (5e-4, 12)
        assert rec["lr"] == pytest.approx(base * lr_factor(rec["step"], total, warmup, "cosine", ratio), rel=1e-12)
    assert json.loads((run / "summary.json").read_text())["steps"] == 12


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_restarts_with_resume(cli: ForkServer, tmp_path: Path) -> None:
    args = [*P, "--max_steps", "6", "--eval_every", "4"]
    err = _error(cli.run("train.py", *args, "--output_dir", "r", "--debug_nan_step", "2", cwd=tmp_path))
    assert "at step 2" in err and "no checkpoint was written yet" in err and not (tmp_path / "r" / "last.pt").exists()
    r = cli.run("train.py", "--output_dir", "r", "--resume", cwd=tmp_path)  # everything else from config.json
    assert r.returncode == 0, r.stderr[-1500:]
    assert "has no checkpoint yet (it stopped before its first save); starting it again from step 0" in r.stdout
    assert cli.run("train.py", *args, "--output_dir", "ref", cwd=tmp_path).returncode == 0
    strip = lambda rs: [{k: v for k, v in x.items() if k != "tokens_per_s"} for x in rs]  # noqa: E731
    assert strip(_train_records(tmp_path / "r")) == strip(_train_records(tmp_path / "ref"))
    history = json.loads((tmp_path / "r" / "config.json").read_text())["history"]
    assert history == [{**history[0], "resumed_at_step": 0, "restarted": True, "changed": {}}]


@pytest.mark.slow
def test_a_damaged_config_json_falls_back_to_the_checkpoints_configuration(cli: ForkServer, tmp_path: Path) -> None:
    """config.json that is binary, not an object, or holds a mistyped option: the resume reads
    last.pt's train_config (with a note), keeps every option that defines the run, and writes a
    whole config.json again."""
    assert cli.run("train.py", *P, "--max_steps", "2", "--eval_every", "2", "--seed", "3", "--output_dir", "d",
                   cwd=tmp_path).returncode == 0
    mistyped = json.loads((tmp_path / "d" / "config.json").read_text())
    mistyped["batch_size"] = "two"
    for damage, why in ((b"\x00\xff\xfe binary", "is unreadable (UnicodeDecodeError)"),
                        (b"[1, 2, 3]", "does not hold a JSON object"),
                        (json.dumps(mistyped).encode(), "holds batch_size = 'two', not of its type (<class 'int'>)")):
        (tmp_path / "d" / "config.json").write_bytes(damage)
        steps = json.loads((tmp_path / "d" / "summary.json").read_text())["steps"] + 1
        r = cli.run("train.py", "--output_dir", "d", "--resume", "--max_steps", str(steps), cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-1500:]
        assert f"{why}; using the configuration stored in d/last.pt" in r.stdout
        config = json.loads((tmp_path / "d" / "config.json").read_text())
        assert config["seed"] == 3 and config["model_size"] == "pico" and config["max_steps"] == steps
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["steps"] == 5


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_runs(cli: ForkServer, tmp_path: Path) -> None:
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *P, "--max_steps", "60", "--eval_every", "30",
                              "--output_dir", "w"], cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "w" / LOCK_NAME
    deadline = time.time() + 120
    while not (lock.is_file() and f"pid {first.pid} " in lock.read_text()) and first.poll() is None:
        assert time.time() < deadline, "the first writer never took its lock"
        time.sleep(0.02)
    for extra in (["--resume"], [*P, "--max_steps", "60"]):
        err = _error(cli.run("train.py", "--output_dir", "w", *extra, cwd=tmp_path))
        assert f"'w' is in use by another train.py (pid {first.pid} on " in err or "already holds a run" in err, err
    assert first.poll() is None, "the first writer ended before the second one tried"
    assert first.wait(timeout=300) == 0, first.stderr.read()[-1500:]
    lines = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "train"] == list(range(1, 61))  # one writer, no interleaving
    assert not lock.exists()  # released (and removed) at the end


@pytest.mark.slow
def test_ladder_forwards_sigterm_to_its_training_child_and_waits_for_it(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "ladder.py"), "--size", "pico", "--variants", "baseline", "--runs_dir", "runs",
           "--no_eval", "--", "--max_steps", "2000", "--eval_every", "1000", "--batch_size", "2", "--seq_len", "32",
           "--eval_samples", "1", "--lang_dataset", "none", "--alg_tasks", "parity"]
    ladder = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    lock = tmp_path / "runs" / "pico" / "baseline" / "seed0" / LOCK_NAME
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().startswith("pid ")):
        assert ladder.poll() is None and time.time() < deadline, ladder.stderr.read()[-1500:]
        time.sleep(0.02)
    child = int(lock.read_text().split()[1])
    ladder.send_signal(signal.SIGTERM)
    assert ladder.wait(timeout=120) == 128 + signal.SIGTERM
    err = ladder.stderr.read()
    assert err.count("terminated") == 2 and "Traceback" not in err, err[-1500:]  # the child's line and the ladder's
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the child stopped (and was reaped) before the ladder exited
    assert not lock.exists()


def test_a_non_finite_validation_loss_stops_the_run_without_a_checkpoint(tmp_path: Path, monkeypatch) -> None:
    real = Trainer.validate

    def nan_at_step_4(self):
        rec = real(self)
        if self.step == 4:
            rec["val_loss"] = float("nan")
        return rec

    monkeypatch.setattr(Trainer, "validate", nan_at_step_4)
    cfg = TrainConfig.from_flat(model_size="pico", max_steps=6, eval_every=2, log_every=1, batch_size=2, seq_len=64,
                                eval_samples=1, lang_dataset="none", alg_tasks="parity", output_dir=str(tmp_path / "v"))
    with pytest.raises(TrainingError, match=r"non-finite validation loss \(val_loss nan\) at step 4; training "
                                            r"stopped, last good checkpoint kept \(last\.pt, step 2, in "):
        train(cfg)
    assert load_checkpoint(tmp_path / "v" / "last.pt")["step"] == 2
    assert [r["step"] for r in read_metrics(tmp_path / "v" / "metrics.jsonl") if r["kind"] == "val"] == [2]
    assert not (tmp_path / "v" / LOCK_NAME).exists()


def test_python_api_resume_takes_the_stored_options_that_were_not_given(tmp_path: Path) -> None:
    """Without a command line, the options left at their defaults are 'not given': a resume with
    only output_dir, resume and a longer max_steps continues the pico run it finds."""
    common = dict(model_size="pico", eval_every=2, log_every=1, batch_size=2, seq_len=64, eval_samples=1,
                  lang_dataset="none", alg_tasks="parity", output_dir=str(tmp_path / "p"))
    train(TrainConfig.from_flat(**common, max_steps=2))
    summary = train(TrainConfig.from_flat(output_dir=str(tmp_path / "p"), resume=True, max_steps=4))
    assert summary["steps"] == 4 and summary["size"] == "pico"
    assert json.loads((tmp_path / "p" / "config.json").read_text())["history"][0]["changed"] == {
        "max_steps": {"from": 2, "to": 4}}


def test_first_nonfinite_names_the_poisoned_tensor() -> None:
    model = tiny_model("baseline")
    assert first_nonfinite(model) is None
    with torch.no_grad():
        model.norm_f.weight[3] = float("inf")
    assert first_nonfinite(model) == "norm_f.weight"
