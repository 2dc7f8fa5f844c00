"""Helpers the tests share (imported as `from helpers import ...`; conftest.py holds only fixtures
and the environment): the tiny models of the unit tests and running the CLIs as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# ---- tiny models ---------------------------------------------------------------------------------
TINY = dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)

# Per-variant settings that keep property-test models tiny and make test sequences cross the
# variant's internal boundaries (chunks, windows). One line per variant.
TINY_OVERRIDES: dict[str, dict] = {
    "baseline": {},
    "shared_loop": {},
    "latent": {"K": 3},
    "act": {"K": 3},
    "ssm": {"d_state": 8, "headdim": 8, "chunk_size": 8},
    "ssm_mem": {"d_state": 8, "headdim": 8, "chunk_size": 8, "attn_period": 2, "n_mem_tokens": 3},
    "reservoir": {"reservoir_size": 48, "chunk_size": 8},
    "liquid": {"reservoir_size": 48},
    "hrnn": {"T": 2, "N": 2, "low_hidden": 24, "high_hidden": 16, "tbptt": 16},
    "rsm": {"chunk_size": 8, "n_slots": 4, "window": 6, "sync_every": 3, "bptt_chunks": 2},
}


def tiny_model(variant: str, **overrides):
    """A few-thousand-parameter model of `variant` for unit tests (bench/gpu_check.py --tiny too)."""
    from unified.models import create_model

    kw = {**TINY, **TINY_OVERRIDES.get(variant, {}), **overrides}
    return create_model(variant, "pico", **kw)


# ---- the CLIs ------------------------------------------------------------------------------------
# A pico run small enough for a test (seconds), exercising every training output.
PICO_TRAIN = ["--model_size", "pico", "--max_steps", "24", "--eval_every", "12", "--log_every", "4",
              "--batch_size", "4", "--seq_len", "96", "--eval_samples", "3", "--total_tokens", "100000"]


def run_cli(script: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the repository in `cwd`, offline, single-threaded."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "PYTHONHASHSEED": "0", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
