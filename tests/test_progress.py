"""Progress bars: shown on a terminal, never with --quiet or when stderr is a pipe or a file."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from helpers import ROOT, tiny_model
from unified import progress as progress_mod
from unified.train.checkpoint import save_checkpoint


def test_bars_follow_the_terminal_and_quiet(monkeypatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    progress_mod.set_quiet(False)
    assert progress_mod.bars_enabled() and not progress_mod.progress(range(3)).disable
    assert progress_mod.progress(range(3), disable=True).disable
    progress_mod.set_quiet(True)
    assert not progress_mod.bars_enabled() and progress_mod.progress(range(3)).disable
    progress_mod.set_quiet(False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress_mod.bars_enabled()


def _on_a_terminal(args: list[str], cwd: Path) -> str:
    """Run `python eval_hub.py args` with stdout and stderr on a pseudo-terminal; its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen([sys.executable, str(ROOT / "eval_hub.py"), *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_eval_hub_shows_a_bar_on_a_terminal_and_none_with_quiet(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, tiny_model("baseline", vocab_size=259), "byte", step=1)
    args = ["--checkpoint", str(ckpt), "--suite", "algorithmic", "--tasks", "parity,copy", "--limit", "2",
            "--out_dir", str(tmp_path)]
    shown = _on_a_terminal(args, tmp_path)
    assert "algorithmic:   0%|" in shown and "wrote" in shown
    quiet = _on_a_terminal([*args, "--quiet"], tmp_path)
    assert "wrote" in quiet and "%|" not in quiet
