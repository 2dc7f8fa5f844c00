"""Running the CLIs as a user would: subprocesses in a scratch folder, offline, one thread."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A pico run small enough for a test (seconds), exercising every training output.
PICO_TRAIN = ["--model_size", "pico", "--max_steps", "24", "--eval_every", "12", "--log_every", "4",
              "--batch_size", "4", "--seq_len", "96", "--eval_samples", "3", "--total_tokens", "100000"]


def run_cli(script: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the repository in `cwd`, offline, single-threaded."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
