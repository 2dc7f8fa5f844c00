"""bench/peers.py without the peers: argument handling, skipping an absent checkout, the log and
metrics parsers, time-to-loss, the ratio table and the RESULTS.md section writer (no timing)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unified.errors import ConfigError
from unified.text.documents import split_documents

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402


def test_checkout_none_absent_and_incomplete(tmp_path: Path) -> None:
    assert peers.checkout(None, "nanogpt", peers.NANOGPT_FILES) is None
    with pytest.raises(ConfigError, match="--nanogpt .* is not a folder"):
        peers.checkout(str(tmp_path / "nope"), "nanogpt", peers.NANOGPT_FILES)
    (tmp_path / "train.py").write_text("")
    with pytest.raises(ConfigError, match="has no model.py, configurator.py"):
        peers.checkout(str(tmp_path), "nanogpt", peers.NANOGPT_FILES)
    (tmp_path / "model.py").write_text("")
    assert peers.checkout(str(tmp_path), "relsm", peers.RELSM_FILES) == tmp_path.resolve()


def test_no_peers_given_skips_both_and_writes_nothing(tmp_path: Path, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(f"top\n{peers.MARKER} x -->\n")
    with pytest.raises(SystemExit) as exit_info:
        peers.run_cli(peers.main, ["--results", str(results)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "skipped nanoGPT: --nanogpt DIR not given" in out and "skipped ReLSM: --relsm DIR not given" in out
    assert results.read_text() == f"top\n{peers.MARKER} x -->\n"


@pytest.mark.parametrize("argv, message", [
    (["--nanogpt", "/no/such/dir"], "error: --nanogpt '/no/such/dir' is not a folder"),
    (["--rounds", "0"], "error: --rounds must be >= 1"),
    (["--variants", "baseline,hrnn"], "error: --variants: 'hrnn' is not a variant both projects have"),
    (["--relsm_shape", "2by128"], "error: --relsm_shape must be BATCHxSEQ"),
])
def test_bad_arguments_are_one_line_exit_2(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        peers.run_cli(peers.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and "Traceback" not in err


def test_cli_process_exit_2_without_traceback() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench/peers.py"), "--relsm", "/no/such/dir"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --relsm") and "Traceback" not in proc.stderr


def test_parse_nanogpt_log_drops_eval_iterations() -> None:
    log = "\n".join(["step 0: train loss 4.2000, val loss 4.1900", "iter 0: loss 4.2, time 900.00ms, mfu -100.00%",
                     "iter 1: loss 4.0, time 50.00ms, mfu -100.00%", "iter 2: loss 3.9, time 70.00ms, mfu 1.00%",
                     "step 3: train loss 3.5000, val loss 3.6000", "iter 3: loss 3.8, time 800.00ms, mfu 1.00%",
                     "iter 4: loss 3.7, time 60.00ms, mfu 1.00%", "saving checkpoint to out"])
    run = peers.parse_nanogpt_log(log, eval_interval=3)
    assert run.step_ms == [50.0, 70.0, 60.0] and run.median_ms() == 60.0
    assert run.val == [(0, 4.19), (3, 3.6)] and run.final_val() == 3.6
    # iterations 0 and 3 count the median step (60 ms), not their evaluation
    assert run.train_s_at[3] == pytest.approx((60 + 50 + 70) / 1e3)
    assert run.train_s_at[5] == pytest.approx((60 + 50 + 70 + 60 + 60) / 1e3)
    with pytest.raises(ConfigError, match="no iteration times"):
        peers.parse_nanogpt_log("hello", 3)


def test_parse_metrics_and_time_to_loss(tmp_path: Path) -> None:
    recs = [{"kind": "train", "step": 10, "tokens": 7680, "tokens_per_s": 3840.0},   # 200 ms/step (warm-up)
            {"kind": "train", "step": 20, "tokens": 15360, "tokens_per_s": 7680.0},  # 100 ms/step
            {"kind": "val", "step": 20, "val_lang_loss": 2.5},
            {"kind": "train", "step": 30, "tokens": 23040, "tokens_per_s": 15360.0},  # 50 ms/step
            {"kind": "val", "step": 30, "val_lang_loss": 2.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    run = peers.parse_metrics(path)
    assert run.step_ms == pytest.approx([100.0, 50.0])
    assert run.train_s_at == pytest.approx({10: 2.0, 20: 3.0, 30: 3.5})
    assert peers.time_to_loss(run, 2.5) == (20, pytest.approx(3.0))
    assert peers.time_to_loss(run, 2.2) == (30, pytest.approx(3.5))
    assert peers.time_to_loss(run, 1.9) is None


def test_ratio_table_and_section_writer(tmp_path: Path) -> None:
    table = peers.ratio_table([{"peer": "nanoGPT", "case": "quick-start", "peer_ms": 54.0, "ours_ms": 45.0,
                                "load": "1.20"}])
    assert "| nanoGPT | quick-start | 54.0 | 45.0 | 1.20x | 1.20 |" in table
    results = tmp_path / "RESULTS.md"
    head = "# generated\n\n## Machine\n\nx\n\n"
    results.write_text(head + f"{peers.MARKER} kept -->\n\n## Other\n\nkeep me\n")
    peers.write_section(results, "first")
    peers.write_section(results, table)  # replaces the section written before, keeps everything else
    text = results.read_text()
    assert text.startswith(head) and "keep me" in text and "first" not in text
    assert text.count(peers.SECTION) == 1 and text.rstrip().endswith("| 1.20 |")
    results.write_text(text + "\n## After\n\nstill here\n")
    peers.write_section(results, "third")
    assert "still here" in results.read_text() and table not in results.read_text()
    plain = tmp_path / "plain.md"
    plain.write_text("no marker\n")
    with pytest.raises(ConfigError, match="no hand-kept part"):
        peers.write_section(plain, "x")
    assert plain.read_text() == "no marker\n"


def test_prepared_nanogpt_data_is_this_projects_split(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    out = peers.prepare_nanogpt_data(text, tmp_path)
    meta = pickle.loads((out / "meta.pkl").read_bytes())
    decode = lambda path: "".join(meta["itos"][i] for i in np.fromfile(path, dtype=np.uint16))  # noqa: E731
    from unified.text.documents import read_documents

    train, val = split_documents(read_documents(text))
    assert decode(out / "val.bin") == "\n".join(val) and decode(out / "train.bin") == "\n".join(train)
    assert 0.04 < len("\n".join(val)) / len(text.read_text()) < 0.06


def test_commands_carry_the_quickstart_shape(tmp_path: Path) -> None:
    cmd = peers.nanogpt_command(tmp_path, tmp_path / "o", 2000, 250)
    for flag in ("--n_layer=4", "--n_head=4", "--n_embd=128", "--block_size=64", "--batch_size=12",
                 "--dropout=0.0", "--device=cpu", "--compile=False", "--max_iters=2000", "--lr_decay_iters=2000"):
        assert flag in cmd
    ours = " ".join(peers.ours_command(tmp_path / "t.txt", tmp_path / "o", 2000, 250))
    for part in ("--set=n_layers=4", "--set=n_heads=4", "--set=d_model=128", "--set=dropout=0", "--seq_len 64",
                 "--batch_size 12", "--lr 1e-3", "--max_steps 2000", "--alg_tokens 0", "--lang_alg_fraction 0"):
        assert part in ours
