"""The training options (issue 17, part B-1): one declaration per option (TrainConfig's sections
and field metadata) from which train.py's flags are derived; `--config FILE`; resolve-then-run
(a pure `resolve` that checks every name before any data is read or model built, and a Trainer
that never assigns to its config)."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import train as train_cli
from unified.cli import run_cli
from unified.data.task_curriculum import TaskCurriculumConfig
from unified.errors import UnifiedError
from unified.train.config import LEAVES, SECTIONS, TrainConfig, _leaves
from unified.train.flags import config_from_args, given_options
from unified.train.resolve import resolve, step_plan
from unified.train.runlog import read_metrics

# A pico run that finishes in seconds (as in test_bad_inputs.py).
T = ["--model_size", "pico", "--max_steps", "4", "--eval_every", "2", "--log_every", "1", "--batch_size", "2",
     "--seq_len", "64", "--eval_samples", "1", "--lang_dataset", "none", "--alg_tasks", "parity"]
# every train.py flag from before the options were derived (README and docs commands use them)
OLD_FLAGS = ("variant model_size output_dir seed tokenizer batch_size seq_len grad_accum lr min_lr_ratio weight_decay "
             "warmup_steps schedule total_tokens alg_tokens max_steps alg_tasks lang_dataset lang_data lang_max_tokens "
             "lang_alg_fraction use_task_curriculum task_curriculum_strategy curriculum_cooldown "
             "curriculum_min_task_evals curriculum_jitter curriculum_replay eval_every eval_samples val_lang_tokens "
             "log_every grad_clip dtype compile matmul_precision device resume report_to set debug_nan_step").split()


def _options() -> set[str]:
    return {s for a in train_cli.build_parser()._actions for s in a.option_strings}


def _parse(*argv: str) -> TrainConfig:
    return config_from_args(train_cli.build_parser().parse_args(list(argv)))


def test_leaf_names_are_unique_across_sections_and_each_is_a_flag() -> None:
    names = [leaf.name for leaf in _leaves()]
    assert len(names) == len(set(names)) == len(LEAVES)
    assert {leaf.section for leaf in LEAVES.values()} == set(SECTIONS)
    assert SECTIONS["curriculum"] is TaskCurriculumConfig  # reused as it is, every field a flag
    assert {f"curriculum_{f.name}" for f in dataclasses.fields(TaskCurriculumConfig)} <= set(LEAVES)
    options = _options()
    assert {f"--{n}" for n in names if n != "model_overrides"} <= options
    assert {f"--{f}" for f in OLD_FLAGS} <= options


def test_every_flag_named_in_a_validation_message_exists() -> None:
    """Bad values for every option (and inconsistent pairs): each message names only real flags."""
    bad = {"str": ["nope", ""], "int": [-1, 0, 2.5], "float": [-1.0, 2.0, float("nan")], "bool": ["yes"]}
    cases = [{name: value} for name, leaf in LEAVES.items() if name != "model_overrides"
             for kind, values in bad.items() if kind in str(leaf.type) for value in values]
    cases += [{"curriculum_lower_at": 0.95}, {"lang_data": "a.txt", "lang_dataset": "b.txt"},
              {"total_tokens": 10}, {"model_overrides": {"max_seq_len": 32}, "seq_len": 64},
              {"tokenizer": "bpe:300", "lang_dataset": "none"}, {"tokenizer": "bpe:10"}, {"model_overrides": {"x": 1}}]
    messages = []
    for case in cases:
        try:
            resolve(TrainConfig.from_flat(case))
        except UnifiedError as exc:
            messages.append(str(exc))
    assert len(messages) > 80
    named = {m for text in messages for m in re.findall(r"--[a-z][a-z_]*", text)}
    assert {"--curriculum_floor", "--curriculum_patience", "--curriculum_stall_evals"} <= named
    assert named <= _options(), named - _options()


def test_resolve_is_pure_fills_every_default_once_and_is_idempotent() -> None:
    cfg = TrainConfig.from_flat(model_size="pico", max_steps=100, lang_dataset="none", variant="act")
    before = dataclasses.asdict(cfg)
    r = resolve(cfg)
    assert dataclasses.asdict(cfg) == before and r is not cfg
    assert (r.lr, r.warmup_steps) == (1e-3, 5)
    assert r.alg_tokens == step_plan(r).run_tokens == 100 * 16 * 256  # algorithmic only: every token
    assert resolve(r) == r
    lang = resolve(TrainConfig.from_flat(model_size="nano", total_tokens=16 * 256 * 40))
    assert (lang.lr, lang.warmup_steps, lang.alg_tokens) == (6e-4, 2, 16 * 256 * 20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.optim = r.optim  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.optim.lr = 1.0  # type: ignore[misc]


def test_flat_view_round_trips_and_accepts_the_older_strategy_name() -> None:
    cfg = _parse("--lr", "3e-4", "--task_curriculum_strategy", "dag", "--set", "n_loops=4", "--curriculum_patience", "5")
    assert cfg.optim.lr == cfg.lr == 3e-4 and cfg.curriculum.strategy == "dag" and cfg.curriculum.patience == 5
    assert cfg.model.model_overrides == {"n_loops": 4}
    assert TrainConfig.from_flat(cfg.flatten()) == cfg
    assert TrainConfig.from_flat(task_curriculum_strategy="dag").curriculum.strategy == "dag"
    with pytest.raises(UnifiedError, match="unknown training option 'nope'; accepted: variant, model_size"):
        TrainConfig.from_flat(nope=1)
    assert given_options(train_cli.build_parser().parse_args(["--lr", "1e-3", "--set", "d=1"])) == {
        "lr", "model_overrides"}


def test_config_file_flat_nested_json_and_yaml_with_flags_overriding(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"lr": 0.002, "optim": {"batch_size": 4}, "curriculum": {
        "strategy": "dag"}, "model": {"variant": "act", "model_overrides": {"K": 2}}}))
    cfg = _parse("--config", str(tmp_path / "a.json"), "--batch_size", "8")
    assert (cfg.lr, cfg.batch_size, cfg.curriculum_strategy, cfg.variant, cfg.model_overrides) == (
        0.002, 8, "dag", "act", {"K": 2})
    pytest.importorskip("yaml")
    (tmp_path / "b.yaml").write_text("seq_len: 32\ndata:\n  alg_tasks: parity\n")
    cfg = _parse("--config", str(tmp_path / "b.yaml"))
    assert (cfg.seq_len, cfg.alg_tasks, cfg.lr) == (32, "parity", None)


@pytest.mark.parametrize("content, needle", [
    ({"lr": 1e-3, "learning_rate": 1}, "unknown option in --config '{f}' 'learning_rate'; accepted: variant, "),
    ({"optim": {"lrr": 1}}, "unknown option in section 'optim' of --config '{f}' 'lrr'; accepted: batch_size"),
    ({"batch_size": "eight"}, "--batch_size must be an integer >= 1, got eight"),
])
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys, content, needle) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.json").write_text(json.dumps(content))
    with pytest.raises(SystemExit) as exc:
        run_cli(train_cli.main, ["--config", "c.json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and needle.format(f="c.json") in err[0], err
    assert not any(tmp_path.glob("runs"))


@pytest.mark.parametrize("flag, value, needle", [
    ("--variant", "nope", "unknown variant 'nope'; accepted: baseline"),
    ("--model_size", "2B", "unknown model size '2B'; accepted: pico, micro"),
    ("--tokenizer", "bpe:abc", "bad tokenizer name 'bpe:abc'"),
    ("--tokenizer", "bpe:300", "--tokenizer bpe:300 is trained on language data"),
    ("--alg_tasks", "parity,nope", "unknown task 'nope'"),
    ("--schedule", "linear", "unknown --schedule 'linear'; accepted: cosine, wsd, constant"),
    ("--curriculum_floor", "-1", "--curriculum_floor must be >= 0, got -1"),
])
def test_train_refuses_a_bad_name_before_any_data_or_model(tmp_path: Path, monkeypatch, capsys, flag, value,
                                                           needle) -> None:
    import unified.text.corpus
    import unified.train.trainer as trainer

    def forbidden(*a, **kw):
        raise AssertionError("data was read, a model built or the network probed before the check")

    for module, name in ((trainer, "load_language"), (unified.text.corpus, "load_language"),
                         (trainer, "create_model"), (trainer, "load_tokenizer"), (train_cli, "set_offline_if_unreachable")):
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_cli(train_cli.main, [*T, flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not any(tmp_path.iterdir())


def test_a_runs_config_json_reruns_it_exactly_and_the_config_is_never_assigned(tmp_path: Path, monkeypatch) -> None:
    """Train a pico run, rerun it with --config <run>/config.json --output_dir <other>: the same
    metrics. The Trainer's config is the resolved one, unchanged by the run."""
    from unified.train.trainer import Trainer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_cli(train_cli.main, [*T, "--output_dir", "a", "--lr", "2e-3", "--set", "n_layers=1"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        run_cli(train_cli.main, ["--config", "a/config.json", "--output_dir", "b"])
    assert exc.value.code == 0

    def numbers(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(Path(run) / "metrics.jsonl")]

    assert numbers("a") == numbers("b") and len(numbers("a")) >= 6
    a, b = (json.loads(Path(run, "config.json").read_text()) for run in "ab")
    assert {k for k in a if a[k] != b[k]} == {"output_dir", "arguments"}
    assert a["lr"] == 2e-3 and a["model_overrides"] == {"n_layers": 1} and a["warmup_steps"] == 1
    assert a["alg_tokens"] == 4 * 2 * 64  # config.json keeps the flat, resolved options

    cfg = TrainConfig.from_flat(json.loads(json.dumps(_parse(*T, "--output_dir", "c").flatten())))
    given = dataclasses.asdict(cfg)
    t = Trainer(cfg)
    resolved = dataclasses.asdict(t.cfg)
    t.run()
    assert dataclasses.asdict(cfg) == given and dataclasses.asdict(t.cfg) == resolved == dataclasses.asdict(resolve(cfg))


def test_a_default_run_folder_being_set_up_by_another_train_goes_to_the_next_suffix(tmp_path, monkeypatch) -> None:
    """Two train.py started together with default names: the second must not be refused because the
    first holds runs/<size>_<variant> before writing its config.json; it takes the next suffix. An
    explicit --output_dir in use is still refused, and a folder holding a finished run is skipped."""
    from unified.train.resolve import claim_output_dir
    from unified.train.runlock import RunLock
    monkeypatch.chdir(tmp_path)
    cfg = resolve(TrainConfig.from_flat(model_size="pico", lang_dataset="none"))
    first = Path("runs/pico_baseline")
    first.mkdir(parents=True)
    (Path("runs/pico_baseline_2")).mkdir()
    (Path("runs/pico_baseline_2") / "config.json").write_text("{}")  # a finished run: skipped
    with RunLock(first):
        lock = RunLock()
        assert claim_output_dir(cfg, lock, lambda p: p.mkdir(parents=True, exist_ok=True)) == Path("runs/pico_baseline_3")
        lock.release()
        explicit = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, output_dir=str(first)))
        with pytest.raises(UnifiedError, match="in use by another train.py"):
            claim_output_dir(explicit, RunLock(), lambda p: None)
    lock = RunLock()
    assert claim_output_dir(cfg, lock, lambda p: None) == first  # free again once the first one is done
    lock.release()
