"""Presets (presets/*.toml, unified/ladder/presets.py), their reports (unified/ladder/reproduction.py) and the
learning-rate grid (unified/ladder/tuning.py): every preset end to end at a tiny budget through
ladder.py, the criteria logic on synthetic runs, and the checks of preset files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import eval_hub
import ladder
import train
from unified.compare.runs import companion
from unified.compare.verdicts import BOTH_AT_CHANCE, INDICATIVE_MET, INDICATIVE_NOT, MET, NOT_MET, NOT_SHOWN, Group
from unified.errors import ConfigError, UnifiedError, UnknownNameError
from unified.ladder.presets import Preset, PresetCriterion, Row, flags, load_preset, parse_preset, preset_names
from unified.ladder.reproduction import evaluate, overall
from unified.ladder.tuning import parse_lr_grid, select_lr, selection_markdown

PRESETS = ("chomsky-parity", "mqar", "negative-eigenvalues", "position-encoding", "relsm-hypotheses")
STATUSES = {MET, NOT_MET, NOT_SHOWN, INDICATIVE_MET, INDICATIVE_NOT, BOTH_AT_CHANCE, "n/a"}
# a tiny budget: one or two steps, two examples per cell, one OOD value per task
TINY_TRAIN = ["--", "--max_steps", "2", "--batch_size", "2", "--eval_every", "2", "--eval_samples", "2"]
TINY_EVAL = {
    "chomsky-parity": "--limit 2 --ood parity=12",
    "negative-eigenvalues": "--limit 2 --ood parity=12",
    "mqar": "--limit 2 --ood mqar=12",
    "position-encoding": "--limit 2 --ood copy=12 reverse=12 addition=5",
    "relsm-hypotheses": "--limit 1 --tasks parity copy --ood parity=32 copy=12 --needle_lengths 2048 --depths 0.5 "
                        "--needle_samples 1 --ppl_max_tokens 300",
}


def _in_process(cmd: list[str]) -> int:
    """ladder's child runs, in this process (the same code as `python train.py ...`, without the
    interpreter start and imports per run)."""
    main = {"train.py": train.main, "eval_hub.py": eval_hub.main}[Path(cmd[1]).name]
    try:
        return main(cmd[2:]) or 0
    except UnifiedError as exc:
        print(f"error: {exc}")
        return 2


def run_ladder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *argv: str) -> int:
    monkeypatch.setattr(ladder, "_run", _in_process)
    return ladder.main(["--runs_dir", str(tmp_path / "runs"), *argv])


def test_list_shows_all_five_and_each_file_is_valid(capsys: pytest.CaptureFixture) -> None:
    assert set(PRESETS) <= set(preset_names())
    assert ladder.main(["--list_presets"]) == 0
    text = capsys.readouterr().out
    for name in PRESETS:
        p = load_preset(name)
        assert f"{name}: {p.title}" in text and p.citation in text
        assert p.criteria and p.rows and p.scale in ("pico", "micro")


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_end_to_end_at_a_tiny_budget(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The whole pipeline (train, evaluate, compare, reproduction.md + figure + json) with the
    report's structure: a verdict, every criterion with a status and its cells' floors, every row."""
    preset = load_preset(name)
    scale = ["--scale", "pico"] if preset.scale != "pico" else []
    rc = run_ladder(monkeypatch, tmp_path, "--preset", name, *scale, f"--eval_args={TINY_EVAL[name]}", *TINY_TRAIN)
    assert rc == 0
    out = tmp_path / "runs" / name / "pico"
    md = (out / "reproduction.md").read_text()
    record = json.loads((out / "reproduction.json").read_text())
    assert md.startswith(f"# Reproduction: {preset.title}") and preset.citation in md
    assert "## Verdict: " in md and record["verdict"] in md
    assert "| criterion | cell | published | measured | chance floor | status |" in md
    assert len(record["criteria"]) == len(preset.criteria)
    for crit, rec in zip(preset.criteria, record["criteria"]):
        assert rec["text"] == crit.text and crit.text in md
        assert rec["status"] in STATUSES and rec["cells"]
        for cell in rec["cells"]:
            assert cell["status"] in STATUSES
            if "_em" in cell["metric"].split("/")[0] and cell["status"] != "n/a":
                assert cell["floor"] is not None and 0.0 <= cell["floor"] <= 1.0, cell  # every accuracy cell has one
    for row in preset.rows:
        assert f"| {row.name} | {row.variant}" in md
        assert list((out / row.name).glob("**/seed0/summary.json"))  # <row>[/lr<rate>]/seed0
    assert (out / "reproduction.png").stat().st_size > 1000
    assert (out / "comparison" / "report.html").is_file()
    if name == "relsm-hypotheses":  # the reference's exact table: 4 rows x 5 hypothesis columns
        assert "## Hypotheses table" in md
        for col in ("algorithmic accuracy", "OOD parity@32", "needle@2k", "PPL", "train time"):
            assert col in md
        table = md.split("## Hypotheses table", 1)[1].split("\n\n", 2)[1].splitlines()
        assert [line.split(" | ")[0] for line in table[2:]] == ["| baseline", "| shared_loop", "| latent", "| act"]
        assert "hyp. 82% / measured" in md and "hyp. 1.8x / measured" in md


@pytest.mark.slow
def test_lr_grid_selects_on_validation_and_evaluates_only_the_choice(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    rc = run_ladder(monkeypatch, tmp_path, "--preset", "negative-eigenvalues", "--lr_grid", "1e-4,3e-3",
                    f"--eval_args={TINY_EVAL['negative-eigenvalues']}", *TINY_TRAIN)
    assert rc == 0
    out = tmp_path / "runs" / "negative-eigenvalues" / "pico"
    record = json.loads((out / "reproduction.json").read_text())
    for row in ("ssm", "ssm_signed"):
        choice = next(s for s in record["selection"] if s["row"] == row)
        scores = {float(k): v for k, v in choice["scores"].items()}
        assert choice["chosen"] == min(scores, key=scores.get)  # lowest validation loss
        for lr in (1e-4, 3e-3):
            run = out / row / f"lr{lr:g}" / "seed0"
            assert (run / "summary.json").is_file()
            evaluated = any(run.glob("results_*.json"))
            assert evaluated == (lr == choice["chosen"]), (row, lr)
    md = (out / "reproduction.md").read_text()
    assert "## Learning-rate selection" in md and "| lr 0.0001 | lr 0.003 | selected |" in md


def test_ladder_refuses_conflicting_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="chomsky-parity"):
        run_ladder(monkeypatch, tmp_path, "--preset", "chomsky")
    with pytest.raises(ConfigError, match="--variants cannot be combined with --preset"):
        run_ladder(monkeypatch, tmp_path, "--preset", "mqar", "--variants", "baseline")
    with pytest.raises(ConfigError, match="--lr and --lr_grid"):
        run_ladder(monkeypatch, tmp_path, "--size", "pico", "--variants", "baseline", "--lr_grid", "1e-3", "--",
                   "--lr", "1e-3")
    with pytest.raises(ConfigError, match="--lr_grid"):
        parse_lr_grid("1e-3,fast")
    assert parse_lr_grid("3e-4, 1e-3,3e-4") == [3e-4, 1e-3]
    assert not (tmp_path / "runs").exists()  # nothing was trained


# ---- preset files ------------------------------------------------------------------------------
def _data(**extra):
    base = {"name": "x", "title": "t", "citation": "c", "claim": "k",
            "rows": [{"name": "a", "variant": "baseline"}, {"name": "b", "variant": "ssm", "options": {"d_state": 4}}],
            "criteria": [{"row": "a", "metric": "iid_em", "op": ">=", "value": 0.5, "text": "a learns"}]}
    base.update(extra)
    return base


@pytest.mark.parametrize("change,match", [
    ({"colour": "red"}, "unknown key 'colour'; accepted: citation, claim"),
    ({"criteria": [{"row": "a", "metric": "iid_em", "op": "=>", "value": 1, "text": "t"}]}, "op '=>' is not one of"),
    ({"criteria": [{"row": "z", "metric": "iid_em", "op": ">=", "value": 1, "text": "t"}]}, "unknown row"),
    ({"criteria": [{"row": "a", "metric": "iid_em", "op": ">=", "text": "t"}]}, "exactly one of value"),
    ({"criteria": [{"row": "a", "metric": "iid_em", "op": ">=", "value": 1, "vs": "b", "text": "t"}]}, "exactly one"),
    ({"rows": [{"name": "a", "variant": "baseline"}, {"name": "a", "variant": "ssm"}]}, "distinct names"),
    ({"rows": [{"name": "a b", "variant": "baseline"}]}, "name must be letters"),
    ({"scale": "huge"}, "unknown scale"),
    ({"scales": {"pico": {"model": {}}}}, "unknown key 'model'"),
    ({"select_on": "test_em"}, "select_on"),
    ({"train": {"alg_tasks": "parity,sorting"}}, "unknown task 'sorting'"),
    ({"figure": {"kind": "pie"}}, "figure kind"),
    ({"train": {"seed": 3}}, "'seed' is set by the ladder"),
    ({"rows": [{"name": "a", "variant": "baseline", "train": {"output_dir": "x"}}]}, "row a: 'output_dir'"),
])
def test_bad_preset_files_are_one_line_errors(change: dict, match: str) -> None:
    with pytest.raises(UnifiedError, match=match):  # ConfigError or UnknownNameError
        parse_preset(_data(**change))
    with pytest.raises(UnknownNameError, match="unknown variant"):
        parse_preset(_data(rows=[{"name": "a", "variant": "transformer9"}]))


def test_preset_arguments_per_scale_and_row() -> None:
    p = parse_preset(_data(train={"max_steps": 10, "compile": False, "lr": 3e-3},
                           eval={"suite": "algorithmic", "tasks": ["parity", "copy"]},
                           scales={"nano": {"train": {"max_steps": 99, "dtype": "bf16"}, "eval": {"device": "cuda"}}}))
    assert p.train_args("pico") == ["--max_steps", "10", "--lr", "0.003"]
    assert p.train_args("nano") == ["--max_steps", "99", "--lr", "0.003", "--dtype", "bf16"]
    assert p.eval_args("nano") == ["--tasks", "parity", "copy", "--device", "cuda"] and p.suite("nano") == "algorithmic"
    assert p.row("b").train_args() == ["--set", "d_state=4"]
    assert flags({"flag": True, "off": False, "x": [1, 2]}) == ["--flag", "--x", "1", "2"]
    assert Row("r", "ssm", {"mlp": False}).train_args() == ["--set", "mlp=false"]


# ---- criteria on synthetic runs ------------------------------------------------------------------
def group(name: str, values: dict[str, list[float]], floor: float | None = 0.5, se: float = 0.02) -> Group:
    n = len(next(iter(values.values())))
    metrics = []
    for i in range(n):
        m = {k: v[i] for k, v in values.items()}
        for k in values:
            if "_em" in k and floor is not None:
                m[companion(k, "floor")], m[companion(k, "se")] = floor, se
        metrics.append(m)
    return Group("pico", name, "baseline", [None] * n, metrics)  # type: ignore[list-item]


def _preset(*criteria: PresetCriterion) -> Preset:
    return Preset("x", "t", "c", "k", [Row("a", "baseline"), Row("b", "baseline")], list(criteria))


def test_absolute_criteria_use_the_interval_over_seeds() -> None:
    crit = PresetCriterion("a", "ood_em/parity/*", ">=", "a solves", value=0.9)
    groups = {"a": group("a", {"ood_em/parity/12": [0.97, 0.99, 0.98], "ood_em/parity/16": [0.6, 1.0, 0.95]}),
              "b": group("b", {"iid_em": [0.5]})}
    (o,) = evaluate(_preset(crit), groups)
    assert [c.metric for c in o.cells] == ["ood_em/parity/12", "ood_em/parity/16"]
    assert [c.status for c in o.cells] == [MET, NOT_SHOWN] and o.status == NOT_SHOWN
    groups["a"] = group("a", {"ood_em/parity/12": [0.5, 0.52, 0.48]})
    (o,) = evaluate(_preset(crit), groups)
    assert o.status == NOT_MET and "at chance" in o.cells[0].measured and o.cells[0].floor == 0.5
    assert overall([o]) == "not reproduced"


def test_one_seed_is_indicative_with_the_eval_sampling_interval() -> None:
    crit = PresetCriterion("a", "iid_em", "<=", "a is at most 60%", value=0.6)
    (o,) = evaluate(_preset(crit), {"a": group("a", {"iid_em": [0.55]}), "b": group("b", {"iid_em": [0.5]})})
    assert o.status == INDICATIVE_MET and "eval sampling only" in o.cells[0].measured
    assert abs(o.cells[0].low - (0.55 - 1.959964 * 0.02)) < 1e-6  # no n: the run's standard error
    ppl = group("a", {"word_perplexity": [18.0]}, floor=None)
    (o,) = evaluate(_preset(PresetCriterion("a", "word_perplexity", "<=", "t", value=20)), {"a": ppl, "b": ppl})
    assert o.cells[0].low is None and o.cells[0].floor is None and o.status == INDICATIVE_MET  # no companions
    g = group("a", {"iid_em": [1.0]})
    g.metrics[0][companion("iid_em", "n")] = 100
    (o,) = evaluate(_preset(PresetCriterion("a", "iid_em", ">=", "t", value=0.99)), {"a": g, "b": g})
    assert o.cells[0].high == 1.0 and abs(o.cells[0].low - 0.963) < 1e-3  # Wilson, not [1, 1]
    assert o.status == INDICATIVE_MET
    assert overall([o]) == "single seed: indicative only"


def test_relative_criteria_are_welch_contrasts_and_never_met_at_chance() -> None:
    crit = PresetCriterion("a", "ood_em", ">=", "a beats b by 20", vs="b", delta=0.2)
    groups = {"a": group("a", {"ood_em": [0.95, 0.97, 0.99]}), "b": group("b", {"ood_em": [0.5, 0.55, 0.52]})}
    (o,) = evaluate(_preset(crit), groups)
    assert o.status == MET and "a 97.0% vs b 52.3%" in o.cells[0].measured
    crit = PresetCriterion("a", "ood_em", ">", "a beats b", vs="b")
    groups = {"a": group("a", {"ood_em": [0.50, 0.52, 0.54]}), "b": group("b", {"ood_em": [0.44, 0.46, 0.48]})}
    (o,) = evaluate(_preset(crit), groups)
    assert o.status == BOTH_AT_CHANCE and "at chance: a, b" in o.cells[0].measured  # +6 points, both reach the floor
    groups["a"] = group("a", {"ood_em": [0.70, 0.72, 0.74]})
    assert evaluate(_preset(crit), groups)[0].status == MET  # only b at chance: a real improvement
    crit = PresetCriterion("a", "iid_em/mqar/d8", "<", "a degrades with pairs", vs_metric="iid_em/mqar/d2")
    groups = {"a": group("a", {"iid_em/mqar/d8": [0.2, 0.25, 0.22], "iid_em/mqar/d2": [0.9, 0.95, 0.92]}, floor=0.1),
              "b": group("b", {"iid_em": [0.5]})}
    (o,) = evaluate(_preset(crit), groups)
    assert o.status == MET and "a iid_em/mqar/d8 22.3% vs a iid_em/mqar/d2 92.3%" in o.cells[0].measured
    crit = PresetCriterion("a", "s_per_mtok", "<=", "a at most 1.5x b", vs="b", k=1.5)
    groups = {"a": group("a", {"s_per_mtok": [12.0, 12.2, 11.8]}), "b": group("b", {"s_per_mtok": [10.0, 10.2, 9.8]})}
    (o,) = evaluate(_preset(crit), groups)
    assert o.status == MET and "1.20x the other (need <= 1.5x)" in o.cells[0].measured
    assert o.cells[0].floor is None  # no chance floor for a time
    groups["a"] = group("a", {"s_per_mtok": [14.0, 15.0, 16.0]})  # 1.5x exactly: inside the interval
    assert evaluate(_preset(crit), groups)[0].status == NOT_SHOWN


# ---- learning-rate selection ----------------------------------------------------------------------
def _run_dir(path: Path, best_val_loss: float | None, val_em: float = 0.5) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"variant": "baseline", "model_size": "pico", "seed": 0}))
    if best_val_loss is not None:
        (path / "summary.json").write_text(json.dumps({"best_val_loss": best_val_loss, "best_step": 10}))
        (path / "metrics.jsonl").write_text(json.dumps({"kind": "val", "step": 10, "val_exact_match": val_em}) + "\n")
    return path


def test_select_lr_uses_validation_scores_and_skips_incomplete_rates(tmp_path: Path) -> None:
    runs = {1e-3: [_run_dir(tmp_path / "a0", 1.0, 0.2), _run_dir(tmp_path / "a1", 1.2, 0.3)],
            3e-3: [_run_dir(tmp_path / "b0", 0.7, 0.1), _run_dir(tmp_path / "b1", 0.8, 0.1)],
            1e-2: [_run_dir(tmp_path / "c0", 0.1, 0.9), _run_dir(tmp_path / "c1", None)]}  # one seed diverged
    choice = select_lr("baseline", runs, "val_loss")
    assert choice.chosen == 3e-3 and choice.scores[1e-2] is None and abs(choice.scores[1e-3] - 1.1) < 1e-12
    assert select_lr("baseline", runs, "val_exact_match").chosen == 1e-3
    md = selection_markdown([choice])
    assert "| baseline | 1.1 | **0.75** | incomplete | 0.003 |" in md
