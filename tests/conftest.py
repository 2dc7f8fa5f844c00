"""Shared test fixtures. Tests never touch the network: the HF hub is forced offline."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread per test process: tests run in parallel processes (pytest -n 2), and tiny
# models gain nothing from more threads, while oversubscribed cores slow them down many times.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

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
    """A few-thousand-parameter model of `variant` for unit tests."""
    from unified.models import create_model

    kw = {**TINY, **TINY_OVERRIDES.get(variant, {}), **overrides}
    return create_model(variant, "pico", **kw)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
