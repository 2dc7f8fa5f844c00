"""Every bad input to train.py, eval_hub.py and compare.py exits with status 2 and one stderr line
naming the problem, and leaves every earlier output (checkpoints, metrics, results, data files)
byte-for-byte and mtime-for-mtime as it was (DESIGN contract 6; issue 10).

Each case is its own process (forked from a server that imported the CLIs once, see
cli_forkserver.py), so the ~36 cases cost seconds rather than a minute of imports."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest

from cli_forkserver import ForkServer
from unified.checkpoint import load_checkpoint
from unified.runlog import read_metrics
from unified.tokenizer import train_bpe
from unified.training import TrainConfig, train

# A pico run that reaches its first checkpoint within seconds.
T = ["--model_size", "pico", "--max_steps", "4", "--eval_every", "2", "--log_every", "1", "--batch_size", "2",
     "--seq_len", "64", "--eval_samples", "1", "--lang_dataset", "none", "--alg_tasks", "parity"]
PROGRESS = re.compile(r"\|\s*\d+/\d+ \[")  # a tqdm frame: not an error line


@pytest.fixture(scope="module")
def cli():
    """The CLIs, imported once; each run is a forked process."""
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """Earlier outputs and bad files: a finished run `prev` (checkpoints, metrics, a results file),
    a run `broken` whose last.pt is corrupt, a BPE tokenizer.json, and assorted bad data files."""
    root = tmp_path_factory.mktemp("earlier")
    train(TrainConfig(model_size="pico", max_steps=4, eval_every=2, log_every=1, batch_size=2, seq_len=64,
                      eval_samples=1, lang_dataset="none", alg_tasks="parity", output_dir=str(root / "prev")))
    (root / "prev" / "results_algorithmic.json").write_text('{"meta": {}, "algorithmic": {"exact_match": 0.0}}\n')
    shutil.copytree(root / "prev", root / "broken")
    (root / "broken" / "last.pt").write_bytes(os.urandom(4096))
    train_bpe(["the cat sat on the mat. " * 50, "a dog ran in the park. " * 50], 300).save(root / "tok.json")
    (root / "empty.txt").write_text("")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 40)
    (root / "corrupt.pt").write_bytes(os.urandom(3000))
    (root / "notckpt.pt").write_text("hello, I am not a checkpoint\n")
    (root / "afile").write_text("a regular file: nothing can be created below it\n")
    (root / "emptydir").mkdir()
    return root


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _nan_keeps_last_good_checkpoint(work: Path) -> None:
    ckpt = load_checkpoint(work / "nan" / "last.pt")
    assert ckpt["step"] == 2  # the checkpoint before the bad step, intact and loadable
    assert [r["step"] for r in read_metrics(work / "nan" / "metrics.jsonl") if r["kind"] == "train"] == [1, 2]
    assert not (work / "nan" / "summary.json").exists()


CASES: list[tuple[str, str, list[str], str, Callable[[Path], None] | None]] = [
    # id, script, args, text the one stderr line must contain, extra check
    ("unknown-variant", "train.py", ["--variant", "nope"], "unknown variant 'nope'; accepted: baseline, shared_loop", None),
    ("unknown-size", "train.py", ["--model_size", "2B"], "unknown model size '2B'; accepted: pico, micro, nano", None),
    ("unknown-task", "train.py", ["--alg_tasks", "parity,nope"], "unknown task 'nope'", None),
    ("batch-size-0", "train.py", ["--batch_size", "0"], "--batch_size must be >= 1, got 0", None),
    ("negative-budget", "train.py", ["--total_tokens", "-5"], "--total_tokens must be >= 1, got -5", None),
    ("zero-steps", "train.py", ["--max_steps", "0"], "--max_steps must be >= 1, got 0", None),
    ("negative-alg-budget", "train.py", ["--alg_tokens", "-1"], "--alg_tokens must be >= 0, got -1", None),
    ("unknown-dtype", "train.py", [*T, "--dtype", "fp8"], "invalid choice: 'fp8'", None),
    ("unknown-model-option", "train.py", [*T, "--set", "nope=1"], "unknown option for variant 'baseline' 'nope'", None),
    ("missing-data-file", "train.py", ["--lang_data", "missing.txt"], "does not exist", None),
    ("empty-data-file", "train.py", [*T, "--lang_dataset", "empty.txt"], "'empty.txt' is empty", None),
    ("non-text-data-file", "train.py", [*T, "--lang_dataset", "binary.bin"], "is not UTF-8 text", None),
    ("unreachable-hub-dataset", "train.py", [*T, "--lang_dataset", "hf:nobody/no-such-dataset"],
     "needs the Hugging Face hub, which cannot be reached", None),
    ("unreachable-hub-tokenizer", "train.py", [*T, "--tokenizer", "nobody/no-such-tokenizer"],
     "cannot load tokenizer 'nobody/no-such-tokenizer'", None),
    ("seq-longer-than-model", "train.py", [*T, "--set", "max_seq_len=32"],
     "--seq_len 64 is longer than the model supports", None),
    ("seq-shorter-than-examples", "train.py", [*T, "--seq_len", "4"], "seq_len 4 is too short for task 'parity'", None),
    ("unwritable-output-dir", "train.py", [*T, "--output_dir", "afile/out"], "output dir 'afile/out' is not writable", None),
    ("output-dir-holds-a-run", "train.py", [*T, "--output_dir", "prev"], "already holds a run; use --resume", None),
    ("resume-without-checkpoint", "train.py", [*T, "--output_dir", "fresh", "--resume"], "no fresh/last.pt to resume from", None),
    ("resume-corrupt-checkpoint", "train.py", [*T, "--output_dir", "broken", "--resume"],
     "checkpoint 'broken/last.pt' is corrupt", None),
    ("resume-other-tokenizer", "train.py", [*T, "--output_dir", "prev", "--resume", "--tokenizer", "tok.json"],
     "--resume: run used tokenizer 'byte', not 'bpe:", None),
    ("resume-other-variant", "train.py", [*T, "--output_dir", "prev", "--resume", "--variant", "shared_loop"],
     "is a pico baseline run, not pico shared_loop", None),
    ("nan-loss", "train.py", [*T, "--output_dir", "nan", "--debug_nan_step", "2"],
     "non-finite loss (nan) at step 2; training stopped, last good checkpoint kept (last.pt in nan)",
     _nan_keeps_last_good_checkpoint),
    ("unknown-suite", "eval_hub.py", ["--suite", "nope"], "unknown suite 'nope'", None),
    ("missing-checkpoint", "eval_hub.py", ["--checkpoint", "missing.pt"], "checkpoint 'missing.pt' does not exist", None),
    ("no-checkpoint-anywhere", "eval_hub.py", [], "no --checkpoint given", None),
    ("corrupt-checkpoint", "eval_hub.py", ["--checkpoint", "corrupt.pt"], "'corrupt.pt' is corrupt or not a torch checkpoint", None),
    ("text-file-as-checkpoint", "eval_hub.py", ["--checkpoint", "notckpt.pt"], "is corrupt or not a torch checkpoint", None),
    ("checkpoint-of-other-tokenizer", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--tokenizer", "tok.json"],
     "checkpoint was trained with tokenizer 'byte', not 'bpe:", None),
    ("eval-limit-0", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--limit", "0"], "--limit must be >= 1", None),
    ("eval-unwritable-out-dir", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--out_dir", "afile/x"],
     "--out_dir 'afile/x' is not writable", None),
    ("eval-unreachable-hub-dataset", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--suite", "perplexity",
                                                     "--ppl_dataset", "hf:nobody/no-such-dataset"],
     "the hub cannot be reached and it is not cached", None),
    ("eval-missing-text-file", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--suite", "perplexity",
                                               "--text_file", "missing.txt"], "--text_file 'missing.txt' does not exist", None),
    ("compare-missing-run-folder", "compare.py", ["nope_dir"], "run folder 'nope_dir' does not exist", None),
    ("compare-folder-without-runs", "compare.py", ["emptydir"], "'emptydir' holds no run folder", None),
    ("compare-unwritable-out", "compare.py", ["prev", "--out", "afile/cmp"], "--out 'afile/cmp' is not writable", None),
]


@pytest.mark.slow
@pytest.mark.parametrize("script,args,needle,check", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_keeps_earlier_outputs(cli: ForkServer, earlier: Path, tmp_path: Path,
                                                                   script: str, args: list[str], needle: str,
                                                                   check) -> None:
    work = tmp_path / "w"
    shutil.copytree(earlier, work)  # copy2 keeps mtimes; every case gets its own copy
    before = _snapshot(work)
    r = cli.run(script, *args, cwd=work)
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    frames = [part for line in r.stderr.split("\n") for part in line.split("\r")]
    lines = [f for f in frames if f.strip() and not PROGRESS.search(f)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr[-1500:]
    after = _snapshot(work)
    assert {k: after.get(k) for k in before} == before  # nothing earlier changed or vanished
    if check is not None:
        check(work)


def test_the_table_covers_every_cli_and_enough_cases() -> None:
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == {"train.py", "eval_hub.py", "compare.py"}
