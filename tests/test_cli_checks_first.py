"""Every CLI checks every name and value before it reads any data or builds any model (issue 17):
a bad suite, task, --set key, --model_size, preset or count is one `error: ...` line and exit 2,
with the checkpoint loader, the run reader, the corpus loader, the model constructor and the
ladder's child processes patched to fail the test if they are reached."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import compare as compare_cli
import eval_hub
import ladder as ladder_cli
import sample as sample_cli
from unified.cli import run_cli


def _reached(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called before the options were checked")

    return fail


@pytest.fixture
def guarded(monkeypatch, tmp_path: Path) -> Path:
    """A working folder where loading a checkpoint, reading runs or a corpus, building a model or
    starting a child process fails the test."""
    import unified.compare.comparison
    import unified.evals.hub
    import unified.models.base
    import unified.text.corpus

    for module, name in [(eval_hub, "load_for_eval"), (eval_hub, "newest_checkpoint"), (sample_cli, "load_for_eval"),
                         (sample_cli, "newest_checkpoint"), (unified.evals.hub, "load_checkpoint"),
                         (unified.compare.comparison, "load_runs"), (unified.text.corpus, "load_corpus"),
                         (unified.text.corpus, "load_language"), (unified.models.base, "create_model"),
                         (ladder_cli, "_run")]:
        monkeypatch.setattr(module, name, _reached(f"{module.__name__}.{name}"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(capsys, main, argv: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


CKPT = ["--checkpoint", "absent/best_model.pt"]
EVAL_CASES = [
    ("unknown-suite", ["--suite", "nope"], "unknown suite 'nope'"),
    ("unknown-task", ["--tasks", "nope"], "unknown task 'nope'"),
    ("limit-0", ["--limit", "0"], "--limit must be >= 1, got 0"),
    ("needle-samples-0", ["--needle_samples", "0"], "--needle_samples must be >= 1"),
    ("unknown-set-key", ["--set", "nope=3"], "--set nope: no variant can change 'nope' after training"),
    ("unknown-override-alias-key", ["--override", "nope=3"], "--set nope: no variant can change"),
    ("set-not-key-value", ["--set", "n_loops"], "is not KEY=VALUE"),
    ("K-not-an-integer", ["--K", "x"], "argument --K: invalid int value"),
    ("needle-lengths-not-numbers", ["--needle_lengths", "a,b"], "argument --needle_lengths"),
    ("depths-out-of-range", ["--depths", "2"], "--depths must be numbers in [0, 1]"),
    ("ppl-prefix", ["--ppl_prefix", "pad"], "invalid choice: 'pad'"),
    ("ppl-two-sources", ["--text_file", "a.txt", "--ppl_dataset", "tinystories"], "give either --text_file"),
    ("ppl-max-tokens-negative", ["--ppl_max_tokens", "-1"], "--ppl_max_tokens must be >= 0"),
    ("device", ["--device", "tpu9"], "--device 'tpu9' is not a device"),
    ("threads", ["--threads", "-1"], "--threads must be >= 0"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_eval_hub_checks_before_loading(guarded: Path, capsys, argv: list[str], needle: str) -> None:
    _refused(capsys, eval_hub.main, [*CKPT, *argv], needle)
    assert list(guarded.iterdir()) == []


SAMPLE_CASES = [
    ("temperature", ["--temperature", "-1"], "temperature"),
    ("top-p", ["--top_p", "2"], "top_p"),
    ("num-samples", ["--num_samples", "0"], "--num_samples must be >= 1"),
    ("unknown-set-key", ["--set", "nope=1"], "--set nope: no variant can change"),
    ("prefix", ["--prefix", "pad"], "invalid choice: 'pad'"),
    ("device", ["--device", "tpu9"], "is not a device"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in SAMPLE_CASES], ids=[c[0] for c in SAMPLE_CASES])
def test_sample_checks_before_loading(guarded: Path, capsys, argv: list[str], needle: str) -> None:
    _refused(capsys, sample_cli.main, [*CKPT, *argv], needle)


def test_compare_checks_before_reading_runs(guarded: Path, capsys) -> None:
    run = guarded / "runs" / "pico" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"variant": "baseline", "model_size": "pico"}))
    (guarded / "afile").write_text("a regular file\n")
    (guarded / "empty").mkdir()
    _refused(capsys, compare_cli.main, ["absent"], "run folder 'absent' does not exist")
    _refused(capsys, compare_cli.main, ["empty"], "holds no run folder")
    _refused(capsys, compare_cli.main, ["runs", "--baseline", "absent"], "run folder 'absent' does not exist")
    _refused(capsys, compare_cli.main, ["runs", "--output_dir", "afile/x"], "--output_dir 'afile/x' is not writable")
    _refused(capsys, compare_cli.main, ["runs", "--out", "afile/x"], "--output_dir 'afile/x' is not writable")


L = ["--model_size", "pico", "--variants", "baseline", "--output_dir", "ladder_runs"]
LADDER_CASES = [
    ("model-size", ["--model_size", "huge", "--variants", "baseline"], "unknown model size 'huge'"),
    ("size-alias", ["--size", "huge", "--variants", "baseline"], "unknown model size 'huge'"),
    ("unknown-variant", ["--model_size", "pico", "--variants", "baseline,nope"], "unknown variant 'nope'"),
    ("unknown-preset", ["--preset", "nope"], "unknown preset 'nope'; accepted: "),
    ("seeds", [*L, "--seeds", "a"], "--seeds must be comma-separated integers"),
    ("unknown-suite", [*L, "--suite", "nope"], "unknown suite 'nope'"),
    ("lr-grid", [*L, "--lr_grid", "fast"], "--lr_grid must be comma-separated numbers"),
    ("unknown-set-key", [*L, "--set", "nope=1"], "unknown option for variant 'baseline' 'nope'"),
    ("train-option", [*L, "--", "--batch_size", "0"], "--batch_size must be"),
    ("train-owned", [*L, "--", "--model_size", "nano"], "--model_size is set by the ladder"),
    ("eval-limit", [*L, "--eval_args=--limit 0"], "--limit must be >= 1, got 0"),
    ("eval-unknown-set-key", [*L, "--eval_args=--set nope=2"], "--set nope: no variant can change"),
    ("eval-unknown-flag", [*L, "--eval_args=--limt 3"], "unrecognized arguments: --limt"),
    ("eval-owned", [*L, "--eval_args=--output_dir x"], "--eval_args: --output_dir is set by the ladder"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in LADDER_CASES], ids=[c[0] for c in LADDER_CASES])
def test_ladder_checks_before_training(guarded: Path, capsys, argv: list[str], needle: str) -> None:
    _refused(capsys, ladder_cli.main, argv, needle)
    assert not (guarded / "ladder_runs").exists() and not (guarded / "runs").exists()


def test_ladder_passes_set_to_train_and_output_dir_names_the_root(guarded: Path, capsys) -> None:
    """The canonical flags reach the commands: --set goes to train.py, --output_dir is the root,
    and eval_hub.py is called with --output_dir (guards: nothing runs, --print_commands only prints)."""
    code = ladder_cli.main([*L, "--set", "n_loops=2", "--variants", "shared_loop", "--print_commands",
                            "--eval_args=--limit 2 --needle_lengths 96"])
    out = capsys.readouterr().out
    assert code == 0
    train_cmd, eval_cmd = out.strip().split(" && ")
    assert "--set n_loops=2" in train_cmd and "ladder_runs/pico/shared_loop/seed0" in train_cmd
    assert "eval_hub.py" in eval_cmd and "--output_dir" in eval_cmd and "--out_dir" not in eval_cmd


def test_the_guards_fire(guarded: Path) -> None:
    """The patched loaders are the ones the CLIs call: good options reach them."""
    with pytest.raises(AssertionError, match="load_for_eval was called"):
        eval_hub.main([*CKPT, "--limit", "2"])
    with pytest.raises(AssertionError, match="load_for_eval was called"):
        sample_cli.main(CKPT)
    run = guarded / "runs" / "pico" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(AssertionError, match="load_runs was called"):
        compare_cli.main(["runs"])
    with pytest.raises(AssertionError, match="_run was called"):
        ladder_cli.main([*L, "--eval_args=--limit 2"])


def test_eval_settings_default_to_the_settings_dataclasses() -> None:
    """With no options, eval_hub's typed settings are the Settings dataclasses' defaults (one
    declaration each; --batch_size is shared, so the three suites must agree on it), and every
    suite writes its as-trained file; the aliases build the same settings as the canonical flags."""
    from dataclasses import replace

    from unified.evals.algorithmic import AlgorithmicSettings
    from unified.evals.flags import eval_settings, results_names
    from unified.evals.needle import NeedleSettings
    from unified.evals.perplexity import PerplexitySettings

    parse = eval_hub.build_parser().parse_args
    s = eval_settings(parse([]))
    assert (s.algorithmic, s.needle, s.perplexity) == (AlgorithmicSettings(), NeedleSettings(), PerplexitySettings())
    assert s.overrides == {} and s.tasks is None and s.output_dir is None
    assert len({AlgorithmicSettings().batch_size, NeedleSettings().batch_size, PerplexitySettings().batch_size}) == 1
    assert results_names(parse(["--suite", "all"])) == {n: f"results_{n}.json"
                                                        for n in ("algorithmic", "needle", "perplexity", "all")}
    canonical = eval_settings(parse(["--set", "K=8", "--set", "n_loops=2", "--output_dir", "o", "--needle_lengths", "96"]))
    alias = eval_settings(parse(["--K", "8", "--override", "n_loops=2", "--out_dir", "o", "--context_lengths", "96"]))
    assert alias == canonical and canonical.overrides == {"K": 8, "n_loops": 2}
    assert canonical.needle == replace(NeedleSettings(), context_lengths=(96,))
    limited = eval_settings(parse(["--limit", "3"]))  # --limit caps the needle samples when they are not given
    assert limited.algorithmic.limit == 3 and limited.needle.samples == 3
