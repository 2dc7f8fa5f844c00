"""ladder.py --print_commands: one self-contained line per (variant, seed) that a scheduler can run
anywhere; once they ran, a plain ladder.py call has nothing left to do but compare."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import ladder as ladder_cli
from helpers import ROOT

TRAIN = ["--max_steps", "4", "--eval_every", "2", "--log_every", "2", "--batch_size", "2", "--seq_len", "64",
         "--eval_samples", "1", "--lang_dataset", "none"]


@pytest.mark.slow
def test_printed_commands_run_anywhere_and_the_ladder_then_only_compares(tmp_path: Path, capsys) -> None:
    argv = ["--size", "pico", "--variants", "baseline,hrnn", "--seeds", "0", "--runs_dir", str(tmp_path / "runs"),
            "--suite", "algorithmic", "--eval_args=--limit 1 --tasks parity", "--", *TRAIN]
    assert ladder_cli.main([*argv[:-len(TRAIN) - 1], "--print_commands", "--", *TRAIN]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("train.py" in line and "eval_hub.py" in line for line in lines)
    elsewhere = tmp_path / "node"  # a scheduler's working directory, not the repository
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    for line in lines:
        r = subprocess.run(["bash", "-c", line], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    for variant in ("baseline", "hrnn"):
        run = tmp_path / "runs" / "pico" / variant / "seed0"
        assert (run / "summary.json").is_file() and list(run.glob("results_algorithmic*.json"))
    assert ladder_cli.main([*argv[:-len(TRAIN) - 1], "--print_commands", "--", *TRAIN]) == 0
    assert capsys.readouterr().out.strip() == ""  # nothing left to run
    assert ladder_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "$ " not in out and "not retrained" in out  # nothing trained or evaluated again
    assert (tmp_path / "runs" / "pico" / "comparison" / "comparison.md").is_file()
