"""Test fixtures and the test environment. Tests never touch the network: the HF hub is forced
offline. Shared helpers (tiny models, CLI runners) are in helpers.py, which tests import."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cli_forkserver import ForkServer
from helpers import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread per test process: tests run in parallel processes (pytest -n 2), and tiny
# models gain nothing from more threads, while oversubscribed cores slow them down many times.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="module")
def cli():
    """The CLIs, imported once per test module; each run is a forked process (tests/cli_forkserver.py)."""
    server = ForkServer()
    yield server
    server.close()
