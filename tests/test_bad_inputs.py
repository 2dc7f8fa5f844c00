"""Every bad input to train.py, eval_hub.py, compare.py and ladder.py exits with status 2 and one
stderr line naming the problem, and leaves every earlier output (checkpoints, metrics, results,
data files) byte-for-byte and mtime-for-mtime as it was (docs/design.md#contract-6; issues 10 and 15).

Each case is its own process (forked from a server that imported the CLIs once, see
cli_forkserver.py), so the ~70 cases cost seconds each rather than seconds of imports each. Cases
that need the test process itself (a held lock, a disk that fills up) follow the table."""
from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from cli_forkserver import ForkServer
from unified.text.tokenizer import train_bpe
from unified.train.checkpoint import FORMAT, load_checkpoint
from unified.train.config import TrainConfig
from unified.train.runlock import RunLock
from unified.train.runlog import read_metrics
from unified.train.trainer import train

# A pico run that reaches its first checkpoint within seconds.
T = ["--model_size", "pico", "--max_steps", "4", "--eval_every", "2", "--log_every", "1", "--batch_size", "2",
     "--seq_len", "64", "--eval_samples", "1", "--lang_dataset", "none", "--alg_tasks", "parity"]
PROGRESS = re.compile(r"\|\s*\d+/\d+ \[")  # a tqdm frame: not an error line
L = ["--size", "pico", "--variants", "baseline", "--runs_dir", "ladder_runs"]  # ladder cases (never train)
_NO_CUDA = (("cuda", "--device 'cuda': CUDA is not available on this machine") if not torch.cuda.is_available()
            else ("cuda:99", "--device 'cuda:99': only"))


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """Earlier outputs and bad files: a finished run `prev` (checkpoints, metrics, a results file),
    a run `broken` whose last.pt is corrupt, a BPE tokenizer.json, and assorted bad data files."""
    root = tmp_path_factory.mktemp("earlier")
    train(TrainConfig.from_flat(model_size="pico", max_steps=4, eval_every=2, log_every=1, batch_size=2, seq_len=64,
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
    (root / "txtdir" / "sub.txt").mkdir(parents=True)  # a folder named like a text file
    (root / "txtdir" / "a.txt").write_text("once upon a time there was a cat.\n" * 20)
    _crafted_checkpoints(root)
    return root


class _Evil:
    """Pickles to a call of os.system: loading it must not run the command."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def _crafted_checkpoints(root: Path) -> None:
    """Checkpoints with the right format tag but damaged fields, derived from prev's, and run
    folders (copies of prev) whose last.pt is damaged."""
    good = torch.load(root / "prev" / "best_model.pt", weights_only=True)

    def variant(name: str, change: Callable[[dict], None]) -> None:
        ckpt = {**good, "model": {**good["model"], "config": dict(good["model"]["config"])},
                "state_dict": dict(good["state_dict"])}
        change(ckpt)
        torch.save(ckpt, root / name)

    variant("no_model.pt", lambda c: c.pop("model"))
    variant("str_model.pt", lambda c: c.update(model="baseline"))
    variant("no_tokenizer.pt", lambda c: c.pop("tokenizer"))
    variant("list_state.pt", lambda c: c.update(state_dict=list(c["state_dict"].values())))
    variant("str_dmodel.pt", lambda c: c["model"]["config"].update(d_model="64"))
    variant("huge_vocab.pt", lambda c: c["model"]["config"].update(vocab_size=2 ** 40))
    torch.save({"format": FORMAT, "payload": _Evil()}, root / "evil.pt")
    last = torch.load(root / "prev" / "last.pt", weights_only=True)
    for run, change in (("badshape", lambda c: c["state_dict"].update({"norm_f.weight": torch.ones(3)})),
                        ("noopt", lambda c: c.pop("optimizer"))):
        shutil.copytree(root / "prev", root / run)
        ckpt = {**last, "state_dict": dict(last["state_dict"])}
        change(ckpt)
        torch.save(ckpt, root / run / "last.pt")
    shutil.copytree(root / "prev", root / "evilrun")
    shutil.copy2(root / "evil.pt", root / "evilrun" / "last.pt")


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _nan_keeps_last_good_checkpoint(work: Path) -> None:
    ckpt = load_checkpoint(work / "nan" / "last.pt")
    assert ckpt["step"] == 2  # the checkpoint before the bad step, intact and loadable
    assert [r["step"] for r in read_metrics(work / "nan" / "metrics.jsonl") if r["kind"] == "train"] == [1, 2]
    assert not (work / "nan" / "summary.json").exists()


def _all_finite(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


def _diverged_checkpoints_are_finite(work: Path) -> None:
    """--lr 1e6: the gradient norm turns NaN while the loss is still finite; the update is not
    applied, and every tensor and number in last.pt and best_model.pt is finite."""
    for name in ("last.pt", "best_model.pt"):
        ckpt = load_checkpoint(work / "lr6" / name)
        assert _all_finite(ckpt["state_dict"]) and _all_finite(ckpt["optimizer"]["state"]), name
        assert math.isfinite(ckpt["best_val"]), name
    assert not (work / "lr6" / "summary.json").exists()


def _nothing_ran(work: Path) -> None:
    assert not (work / "pwned").exists()  # the pickled os.system call never ran


CASES: list[tuple[str, str, list[str], str, Callable[[Path], None] | None]] = [
    # id, script, args, text the one stderr line must contain, extra check
    ("unknown-variant", "train.py", ["--variant", "nope"], "unknown variant 'nope'; accepted: baseline, shared_loop", None),
    ("unknown-size", "train.py", ["--model_size", "2B"], "unknown model size '2B'; accepted: pico, micro, nano", None),
    ("unknown-task", "train.py", ["--alg_tasks", "parity,nope"], "unknown task 'nope'", None),
    ("batch-size-0", "train.py", ["--batch_size", "0"], "--batch_size must be an integer >= 1, got 0", None),
    ("negative-budget", "train.py", ["--total_tokens", "-5"], "--total_tokens must be an integer >= 1, got -5", None),
    ("zero-steps", "train.py", ["--max_steps", "0"], "--max_steps must be an integer >= 1, got 0", None),
    ("negative-alg-budget", "train.py", ["--alg_tokens", "-1"], "--alg_tokens must be an integer >= 0, got -1", None),
    ("unknown-dtype", "train.py", [*T, "--dtype", "fp8"], "unknown --dtype 'fp8'; accepted: fp32, bf16, fp16", None),
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
     "--resume: 'prev' was started with other values of options that define the run: --tokenizer tok.json "
     "(the run has byte)", None),
    ("resume-other-variant", "train.py", [*T, "--output_dir", "prev", "--resume", "--variant", "shared_loop"],
     "--variant shared_loop (the run has baseline)", None),
    ("resume-other-seed", "train.py", [*T, "--output_dir", "prev", "--resume", "--seed", "5"],
     "--seed 5 (the run has 0); leave them out (the run's values are used) or start a new --output_dir", None),
    ("resume-other-model-option", "train.py", [*T, "--output_dir", "prev", "--resume", "--set", "n_layers=1"],
     "--set n_layers=1 (the run has none)", None),
    ("resume-other-budget-and-data", "train.py", [*T, "--output_dir", "prev", "--resume", "--total_tokens", "5000",
                                                  "--lang_dataset", "procedural"],
     "--total_tokens 5000 (the run has 20000000); --lang_dataset procedural (the run has none)", None),
    ("resume-other-global-batch", "train.py", [*T, "--output_dir", "prev", "--resume", "--batch_size", "3"],
     "a global batch of 192 tokens per step (the run has 128", None),
    ("resume-wrong-shape-tensor", "train.py", [*T, "--output_dir", "badshape", "--resume"],
     "checkpoint 'badshape/last.pt': tensor 'norm_f.weight' has shape (3,), the model needs (64,)", None),
    ("resume-no-optimizer-state", "train.py", [*T, "--output_dir", "noopt", "--resume"],
     "--resume: 'noopt/last.pt': field 'optimizer' is missing, expected a dict", None),
    ("resume-crafted-pickle", "train.py", [*T, "--output_dir", "evilrun", "--resume"],
     "checkpoint 'evilrun/last.pt' is corrupt or not a torch checkpoint (UnpicklingError)", _nothing_ran),
    ("nan-loss", "train.py", [*T, "--output_dir", "nan", "--debug_nan_step", "2"],
     "non-finite loss (nan) at step 2; training stopped before the update, last good checkpoint kept "
     "(last.pt, step 2, in nan); --resume with a lower --lr continues from it", _nan_keeps_last_good_checkpoint),
    ("diverging-lr", "train.py", [*T, "--output_dir", "lr6", "--lr", "1e6", "--eval_every", "1", "--max_steps", "8"],
     "non-finite gradient norm (nan) at step", _diverged_checkpoints_are_finite),
    ("negative-min-lr-ratio", "train.py", [*T, "--min_lr_ratio", "-1"],
     "--min_lr_ratio must be a finite number in [0, 1], got -1.0", None),
    ("infinite-lr", "train.py", [*T, "--lr", "inf"], "--lr must be a finite number > 0, got inf", None),
    ("nan-weight-decay", "train.py", [*T, "--weight_decay", "nan"], "--weight_decay must be a finite number >= 0", None),
    ("zero-grad-clip", "train.py", [*T, "--grad_clip", "0"], "--grad_clip must be a finite number > 0, got 0.0", None),
    ("negative-warmup", "train.py", [*T, "--warmup_steps", "-3"], "--warmup_steps must be an integer >= 0, got -3", None),
    ("lang-fraction-above-1", "train.py", [*T, "--lang_alg_fraction", "1.5"],
     "--lang_alg_fraction must be a finite number in [0, 1], got 1.5", None),
    ("negative-seed", "train.py", [*T, "--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1", None),
    ("budget-below-one-step", "train.py", ["--total_tokens", "10", "--batch_size", "2", "--seq_len", "64"],
     "--total_tokens 10 is less than one optimizer step of 128 tokens", None),
    ("set-max-seq-len-not-a-number", "train.py", [*T, "--set", "max_seq_len=abc"],
     "--set max_seq_len=abc: max_seq_len takes an integer, got 'abc'", None),
    ("set-dropout-not-a-number", "train.py", [*T, "--set", "dropout=abc"],
     "--set dropout=abc: dropout takes a finite number, got 'abc'", None),
    ("unknown-device", "train.py", [*T, "--device", "tpu9"], "--device 'tpu9' is not a device", None),
    ("cuda-device-without-cuda", "train.py", [*T, "--device", _NO_CUDA[0]], _NO_CUDA[1], None),
    ("data-folder-holds-a-folder-named-txt", "train.py", [*T[:-4], "--alg_tasks", "parity", "--lang_data", "txtdir"],
     "language data 'txtdir/sub.txt' is a folder, not a .txt file", None),
    ("unknown-suite", "eval_hub.py", ["--suite", "nope"], "unknown suite 'nope'", None),
    ("missing-checkpoint", "eval_hub.py", ["--checkpoint", "missing.pt"], "checkpoint 'missing.pt' does not exist", None),
    ("no-checkpoint-anywhere", "eval_hub.py", [], "no --checkpoint given", None),
    ("corrupt-checkpoint", "eval_hub.py", ["--checkpoint", "corrupt.pt"], "'corrupt.pt' is corrupt or not a torch checkpoint", None),
    ("text-file-as-checkpoint", "eval_hub.py", ["--checkpoint", "notckpt.pt"], "is corrupt or not a torch checkpoint", None),
    ("checkpoint-without-model", "eval_hub.py", ["--checkpoint", "no_model.pt"],
     "checkpoint 'no_model.pt': field 'model' is missing, expected a dict", None),
    ("checkpoint-with-mistyped-model", "eval_hub.py", ["--checkpoint", "str_model.pt"],
     "checkpoint 'str_model.pt': field 'model' is str 'baseline', expected a dict", None),
    ("checkpoint-without-tokenizer", "eval_hub.py", ["--checkpoint", "no_tokenizer.pt"],
     "field 'tokenizer' is missing, expected a string", None),
    ("checkpoint-with-list-state-dict", "eval_hub.py", ["--checkpoint", "list_state.pt"],
     "field 'state_dict' is list of", None),
    ("checkpoint-with-string-d-model", "eval_hub.py", ["--checkpoint", "str_dmodel.pt"],
     "describes a model that cannot be built: option d_model=64: d_model takes an integer, got '64'", None),
    ("checkpoint-declaring-huge-vocab", "eval_hub.py", ["--checkpoint", "huge_vocab.pt"],
     "tensor 'tok_emb.weight' has shape (259, 64), the model needs (1099511627776, 64)", None),
    ("crafted-pickle-checkpoint", "eval_hub.py", ["--checkpoint", "evil.pt"],
     "checkpoint 'evil.pt' is corrupt or not a torch checkpoint (UnpicklingError)", _nothing_ran),
    ("checkpoint-of-other-tokenizer", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--tokenizer", "tok.json"],
     "checkpoint was trained with tokenizer 'byte', not 'bpe:", None),
    ("eval-limit-0", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--limit", "0"], "--limit must be >= 1", None),
    ("eval-unwritable-out-dir", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--out_dir", "afile/x"],
     "--output_dir 'afile/x' is not writable", None),
    ("eval-unreachable-hub-dataset", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--suite", "perplexity",
                                                     "--ppl_dataset", "hf:nobody/no-such-dataset"],
     "the hub cannot be reached and it is not cached", None),
    ("eval-missing-text-file", "eval_hub.py", ["--checkpoint", "prev/best_model.pt", "--suite", "perplexity",
                                               "--text_file", "missing.txt"], "--text_file 'missing.txt' does not exist", None),
    ("compare-missing-run-folder", "compare.py", ["nope_dir"], "run folder 'nope_dir' does not exist", None),
    ("compare-folder-without-runs", "compare.py", ["emptydir"], "'emptydir' holds no run folder", None),
    ("compare-unwritable-out", "compare.py", ["prev", "--out", "afile/cmp"], "--output_dir 'afile/cmp' is not writable",
     None),
    # ladder.py: every train.py and eval_hub.py option is checked before anything trains
    ("ladder-infinite-lr", "ladder.py", [*L, "--", "--lr", "inf"], "--lr must be a finite number > 0, got inf", None),
    ("ladder-unknown-device", "ladder.py", [*L, "--", "--device", "tpu9"], "--device 'tpu9' is not a device", None),
    ("ladder-set-not-a-number", "ladder.py", [*L, "--", "--set", "dropout=abc"],
     "--set dropout=abc: dropout takes a finite number", None),
    ("ladder-eval-args-typo", "ladder.py", [*L, "--eval_args=--limt 3"], "unrecognized arguments: --limt 3", None),
    ("ladder-eval-args-bad-value", "ladder.py", [*L, "--eval_args=--batch_size 0"], "--batch_size must be >= 1", None),
    ("ladder-eval-args-owned", "ladder.py", [*L, "--eval_args=--out_dir x"],
     "--eval_args: --out_dir is set by the ladder", None),
    ("ladder-negative-seed", "ladder.py", [*L, "--seeds", "0,-2"], "--seeds must be an integer in [0, 4294967295]", None),
]


def _assert_one_error_line(returncode: int, stderr: str, needle: str) -> None:
    assert returncode == 2, (returncode, stderr[-1500:])
    frames = [part for line in stderr.split("\n") for part in line.split("\r")]
    lines = [f for f in frames if f.strip() and not PROGRESS.search(f)]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr[-1500:]
    assert "Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.parametrize("script,args,needle,check", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_keeps_earlier_outputs(cli: ForkServer, earlier: Path, tmp_path: Path,
                                                                   script: str, args: list[str], needle: str,
                                                                   check) -> None:
    work = tmp_path / "w"
    shutil.copytree(earlier, work)  # copy2 keeps mtimes; every case gets its own copy
    before = _snapshot(work)
    r = cli.run(script, *args, cwd=work)
    _assert_one_error_line(r.returncode, r.stderr, needle)
    after = _snapshot(work)
    assert {k: after.get(k) for k in before} == before  # nothing earlier changed or vanished
    assert not (work / "ladder_runs").exists()  # a rejected ladder trained nothing
    if check is not None:
        check(work)


def test_the_table_covers_every_cli_and_enough_cases() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == {"train.py", "eval_hub.py", "compare.py", "ladder.py"}


@pytest.mark.slow
def test_a_run_folder_in_use_is_refused_with_the_holders_pid(cli: ForkServer, earlier: Path, tmp_path: Path) -> None:
    """A second writer into a folder whose lock another process holds (here: this test process)."""
    work = tmp_path / "w"
    shutil.copytree(earlier, work)
    with RunLock(work / "prev"):
        before = _snapshot(work)
        r = cli.run("train.py", *T, "--output_dir", "prev", "--resume", "--max_steps", "6", cwd=work)
        after = _snapshot(work)
    _assert_one_error_line(r.returncode, r.stderr, f"'prev' is in use by another train.py (pid {os.getpid()} on ")
    assert {k: after.get(k) for k in before} == before


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoints(earlier: Path, tmp_path: Path,
                                                                         monkeypatch, capsys) -> None:
    """ENOSPC from the second save of last.pt (simulated in-process): one line, exit 2, no
    traceback, the first last.pt intact and no temporary file left."""
    import train as train_cli
    from unified.cli import run_cli

    real_save, calls = torch.save, []

    def filling_save(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) > 2:  # best_model.pt and last.pt of step 2 are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "save", filling_save)
    with pytest.raises(SystemExit) as exc:
        run_cli(train_cli.main, [*T, "--output_dir", "full"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    _assert_one_error_line(exc.value.code, err, "could not write 'full/")
    assert "No space left on device" in err and "the previous file is intact" in err
    assert load_checkpoint(tmp_path / "full" / "last.pt")["step"] == 2
    assert not list((tmp_path / "full").glob(".*.tmp"))
