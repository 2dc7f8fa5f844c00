"""train.py and eval_hub.py end to end, as a user runs them (docs/design.md#contract-4, 5, 5b, 6)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import PICO_TRAIN, run_cli
from unified.data.tasks import TASK_NAMES, get_task

CONTRACT_FILES = ["config.json", "metrics.jsonl", "summary.json", "loss.png", "accuracy.png", "best_model.pt", "last.pt"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One pico baseline run with default output dir, in a scratch working directory."""
    cwd = tmp_path_factory.mktemp("work")
    r = run_cli("train.py", "--variant", "baseline", *PICO_TRAIN, cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "outputs in runs/pico_baseline" in r.stdout
    return cwd


def test_train_writes_every_contract_file_and_loss_falls(trained: Path) -> None:
    run = trained / "runs" / "pico_baseline"
    for name in CONTRACT_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert len(train) == 6 and len(val) == 2
    assert train[-1]["loss"] < train[0]["loss"]
    assert {"val_loss", "val_exact_match", "val_em/parity"} <= set(val[0])
    config = json.loads((run / "config.json").read_text())
    # default alg_tokens: half of the run's 24 x 4 x 96 tokens; the other half is language (procedural offline)
    assert config["alg_tokens"] == 24 * 4 * 96 // 2 and config["language_source"] is not None
    assert config["lr"] == 1e-3 and config["model"]["variant"] == "baseline"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 24 and summary["params"] > 0 and summary["best_step"] in (12, 24)


def test_second_run_gets_a_suffix_and_eval_picks_the_newest(trained: Path) -> None:
    r = run_cli("train.py", "--variant", "shared_loop", *PICO_TRAIN, "--max_steps", "4", "--eval_every", "4",
                cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("train.py", "--variant", "shared_loop", *PICO_TRAIN, "--max_steps", "4", "--eval_every", "4",
                cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (trained / "runs" / "pico_shared_loop_2" / "best_model.pt").is_file()
    r = run_cli("eval_hub.py", "--suite", "algorithmic", "--limit", "2", "--tasks", "parity", cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pico_shared_loop_2" in r.stdout
    assert (trained / "runs" / "pico_shared_loop_2" / "results_algorithmic@limit=2,tasks=parity.json").is_file()


def test_eval_algorithmic_writes_results_with_meta(trained: Path) -> None:
    ckpt = trained / "runs" / "pico_baseline" / "best_model.pt"
    out = trained / "eval_out"
    r = run_cli("eval_hub.py", "--checkpoint", str(ckpt), "--suite", "algorithmic", "--limit", "3",
                "--out_dir", str(out), cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results_algorithmic@limit=3.json").read_text())  # --limit: not the as-trained file
    meta = res["meta"]
    for key in ("harness_version", "git_commit", "checkpoint", "checkpoint_sha256", "variant", "size", "params",
                "tokenizer", "seed", "decoding", "grid_version", "device", "dtype", "torch_version", "wall_time_s"):
        assert key in meta, key
    alg = res["algorithmic"]
    assert set(alg["tasks"]) == set(TASK_NAMES)  # every registered task
    parity = alg["tasks"]["parity"]
    assert 1 <= parity["iid"]["n"] == parity["iid"]["n_distinct"] <= 3  # stratified: <= 1 per difficulty
    assert set(parity["ood"]) == {str(v) for v in get_task("parity").ood_values}
    assert 0.0 <= alg["exact_match"] <= 1.0 and "exact_match_stderr" in alg


def test_resume_continues_from_last_checkpoint(trained: Path) -> None:
    run = trained / "runs" / "pico_baseline"
    r = run_cli("train.py", "--variant", "baseline", *PICO_TRAIN, "--max_steps", "28", "--output_dir", str(run),
                "--resume", cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 28
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("resume") == 1


# Bad inputs (one stderr line, exit 2, earlier outputs kept) are the table in test_bad_inputs.py.


def test_loss_png_plots_train_cross_entropy_not_the_objective() -> None:
    """loss.png sets train loss beside validation cross-entropy: the train curve must be `ce_loss`
    (without ACT's ponder cost), falling back to `loss` for runs logged before ce_loss existed."""
    import pandas as pd

    from unified.train.plots import train_cross_entropy
    new = pd.DataFrame({"loss": [5.0, 4.0], "ce_loss": [3.0, 2.5]})
    assert train_cross_entropy(new).tolist() == [3.0, 2.5]
    old = pd.DataFrame({"loss": [5.0, 4.0]})
    assert train_cross_entropy(old).tolist() == [5.0, 4.0]
