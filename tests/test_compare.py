"""compare.py and ladder.py: statistics against hand-computed values, table values and verdicts
on fake run folders with known numbers, tolerance of missing files, and the CLIs' errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import ladder as ladder_cli
import unified
from helpers import run_cli
from unified.compare.comparison import compare
from unified.compare.report import main_table, write_report
from unified.compare.stats import estimate, t_quantile, welch_contrast
from unified.compare.verdicts import MET, NOT_MET, NOT_SHOWN
from unified.errors import ConfigError
from unified.evals.results import GRID_VERSION

TASKS = ("parity", "copy")


def fake_run(root: Path, variant: str, seed: int, iid: float, ood: float, s_per_mtok: float = 100.0,
             bpb: float | None = 2.0, size: str = "pico", tokens: int = 10_000, params: int = 1000,
             files: tuple[str, ...] = ("config", "summary", "metrics", "algorithmic", "needle", "perplexity"),
             floor: float | None = None, stderr: float = 0.01) -> Path:
    """A run folder with known numbers: IID exact match `iid` on every task, OOD `ood` at every
    length, wall time s_per_mtok seconds per million tokens, bits per byte `bpb`; with `floor`,
    every cell's chance floor (and standard error `stderr`) as the algorithmic suite writes them."""
    out = root / size / variant / f"seed{seed}"
    out.mkdir(parents=True)
    if "config" in files:
        config = {"variant": variant, "model_size": size, "seed": seed, "model_overrides": {"max_seq_len": 64},
                  "model": {"variant": variant, "size": size, "params": params, "trainable_params": params,
                            "frozen_params": 0}}
        (out / "config.json").write_text(json.dumps(config))
    if "summary" in files:
        summary = {"variant": variant, "size": size, "seed": seed, "tokens": tokens,
                   "wall_time_s": s_per_mtok * tokens / 1e6, "tokens_per_s": 1e6 / s_per_mtok, "params": params,
                   "trainable_params": params, "frozen_params": 0, "flops_per_token": 6 * params,
                   "state_size": 4096, "final_loss": 1.5 + seed / 10, "best_val_loss": 1.4}
        (out / "summary.json").write_text(json.dumps(summary))
    if "metrics" in files:
        recs = [{"kind": "train", "step": s, "tokens": s * 100, "loss": 3.0 / s} for s in (1, 2, 3)]
        recs.append({"kind": "val", "step": 3, "tokens": 300, "val_loss": 1.4, "val_lang_bpb": 2.5})
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    meta = {"variant": variant, "size": size, "seed": 0, "grid_version": GRID_VERSION,
            "harness_version": unified.__version__}
    if "algorithmic" in files:
        extra = {} if floor is None else {"floor": floor, "exact_match_stderr": stderr, "n_distinct": 100}
        tasks = {t: {"iid": {"exact_match": iid, **extra},
                     "ood": {"12": {"exact_match": ood, **extra}, "16": {"exact_match": ood, **extra}}} for t in TASKS}
        alg = {"exact_match": iid, "exact_match_stderr": stderr, "ood_exact_match": ood,
               "ood_exact_match_stderr": stderr, "tasks": tasks,
               **({} if floor is None else {"floor": floor, "ood_floor": floor})}
        (out / "results_algorithmic.json").write_text(json.dumps({"meta": meta, "algorithmic": alg}))
    if "needle" in files:
        needle = {"accuracy": 0.5, "lengths": {"128": {"accuracy": 0.5, "depths": {"0": {"accuracy": 1.0},
                                                                                   "1": {"accuracy": 0.0}}}}}
        (out / "results_needle.json").write_text(json.dumps({"meta": meta, "needle": needle}))
    if "perplexity" in files:
        ppl = ({"available": True, "bits_per_byte": bpb, "token_perplexity": 2 ** bpb, "word_perplexity": 50.0}
               if bpb is not None else {"available": False, "reason": "no held-out text"})
        (out / "results_perplexity.json").write_text(json.dumps({"meta": meta, "perplexity": ppl}))
    return out


def ladder(root: Path, base: list[float], var: list[float], var_ood: list[float] | None = None,
           var_time: float = 150.0, var_bpb: float = 2.1) -> Path:
    """Baseline and `shared_loop` runs, one per seed; IID exact match per seed as given."""
    for seed, em in enumerate(base):
        fake_run(root, "baseline", seed, em, 0.10 + seed / 100)
    for seed, em in enumerate(var):
        ood = (var_ood or [0.30, 0.31, 0.32])[seed]
        fake_run(root, "shared_loop", seed, em, ood, s_per_mtok=var_time + seed, bpb=var_bpb + seed / 100)
    return root


def by_name(comp, name: str):
    return next(v for v in comp.verdicts if v.group.label == name)


# ---- statistics ------------------------------------------------------------------------------
def test_t_quantile_against_known_values() -> None:
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(60) == pytest.approx(2.0003, abs=1e-4)
    assert t_quantile(2.5) == pytest.approx(3.5747, abs=1e-4)  # a Welch df is used as it is, not rounded
    with pytest.raises(ValueError):
        t_quantile(0.5)


def test_estimate_is_the_hand_computed_t_interval() -> None:
    # mean 0.3, s = 0.1, se = 0.1/sqrt(3) = 0.0577350, t(0.975, 2) = 4.302653 -> half-width 0.248414
    e = estimate([0.2, 0.3, 0.4])
    assert e.mean == pytest.approx(0.3) and e.n == 3 and e.std == pytest.approx(0.1)
    assert e.half_width == pytest.approx(0.248414, abs=1e-5)
    assert e.ci_low == pytest.approx(0.051586, abs=1e-5)
    one = estimate([0.7])
    assert one.mean == 0.7 and one.ci_low is None and one.half_width is None
    assert estimate([]) is None


def test_welch_contrast_is_the_hand_computed_interval() -> None:
    # a: mean .52, var 4e-4; b: mean .41, var 1e-4; n = 3 each. c = .52 - .41 - .05 = .06
    # V = 4e-4/3 + 1e-4/3 = 1.6667e-4, se = 0.0129099; df = V^2 / ((4e-4/3)^2/2 + (1e-4/3)^2/2) = 2.941176
    c = welch_contrast([0.50, 0.52, 0.54], [0.40, 0.41, 0.42], k=1.0, delta=0.05)
    assert c.value == pytest.approx(0.06)
    assert c.df == pytest.approx(2.941176, abs=1e-5)
    half = (c.ci_high - c.ci_low) / 2
    assert half == pytest.approx(t_quantile(2.941176) * 0.0129099, rel=1e-5)
    # t(0.975, 2.941) = 3.2187 (scipy); without scipy the table rounds df down to 2 (4.3027)
    assert half / 0.0129099 == pytest.approx(3.2187, abs=1e-3) or half / 0.0129099 == pytest.approx(4.3027, abs=1e-3)
    # k scales the baseline's mean and variance: c = mean(a) - 2 mean(b)
    c2 = welch_contrast([3.0, 5.0], [1.0, 2.0], k=2.0)
    assert c2.value == pytest.approx(4.0 - 3.0)
    assert (c2.ci_high - c2.ci_low) / 2 == pytest.approx(t_quantile(c2.df) * math.sqrt(2 / 2 + 4 * 0.5 / 2))
    assert welch_contrast([1.0], [0.5, 0.6]).ci_low is None  # one seed: no interval


# ---- tables and verdicts ---------------------------------------------------------------------
def test_table_values_and_clear_success(tmp_path: Path) -> None:
    root = ladder(tmp_path / "runs", base=[0.40, 0.41, 0.42], var=[0.50, 0.52, 0.54])
    comp = compare([root])
    assert [g.name for g in comp.groups] == ["pico/baseline", "pico/shared_loop"]
    v = by_name(comp, "shared_loop")
    status = {r.criterion.name: r.status for r in v.results}
    assert status == {"iid": MET, "ood": MET, "time": MET, "bpb": MET}, [r.text for r in v.results]
    assert v.overall == "success"
    written = write_report(comp, tmp_path / "out")
    for name in ("comparison.csv", "comparison.md", "report.html", "runs.csv", "loss.png", "tasks.png", "ood.png",
                 "needle.png", "efficiency.png"):
        assert written[name].is_file() and written[name].stat().st_size > 0, name
    df = pd.read_csv(tmp_path / "out" / "comparison.csv").set_index("label")
    row = df.loc["shared_loop"]
    assert row["seed_count"] == 3 and row["seeds"] == "0 1 2" and row["verdict"] == "success"
    assert row["iid_em"] == pytest.approx(0.52)
    assert row["iid_em_ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), abs=1e-5)
    assert row["iid_em/copy"] == pytest.approx(0.52) and row["ood_em/parity/16"] == pytest.approx(0.31)
    assert row["s_per_mtok"] == pytest.approx(151.0) and row["bits_per_byte"] == pytest.approx(2.11)
    assert row["trainable_params"] == 1000 and row["flops_per_token"] == 6000 and row["state_size"] == 4096
    assert row["criterion_iid"] == MET and df.loc["baseline", "verdict"] == "baseline"
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "| pico/shared_loop | shared_loop | pico   | 3" in md and "52.0 ± 5.0" in md
    assert "data:image/png;base64," in (tmp_path / "out" / "report.html").read_text()


def test_mean_improves_but_interval_overlaps_is_not_shown(tmp_path: Path) -> None:
    # IID: +10 points on average (> +5) but seeds spread widely: c = .05, interval ~[-0.16, +0.26]
    root = ladder(tmp_path / "runs", base=[0.05, 0.15, 0.10], var=[0.10, 0.30, 0.20])
    v = by_name(compare([root]), "shared_loop")
    iid = next(r for r in v.results if r.criterion.name == "iid")
    assert iid.contrast.value == pytest.approx(0.05)
    assert iid.contrast.ci_low < 0 < iid.contrast.ci_high
    assert iid.status == NOT_SHOWN
    assert v.overall == "not shown" and "iid" in v.text


def test_clear_failures_are_not_met(tmp_path: Path) -> None:
    # IID only +1 point with tight seeds; 5x slower; OOD worse than baseline; bpb collapses (2 -> 3)
    root = ladder(tmp_path / "runs", base=[0.40, 0.41, 0.42], var=[0.41, 0.42, 0.43], var_ood=[0.0, 0.01, 0.0],
                  var_time=500.0, var_bpb=3.0)
    v = by_name(compare([root]), "shared_loop")
    assert {r.criterion.name: r.status for r in v.results} == {"iid": NOT_MET, "ood": NOT_MET, "time": NOT_MET,
                                                               "bpb": NOT_MET}
    assert v.overall == "fail"


def test_single_seed_is_indicative_only(tmp_path: Path) -> None:
    root = ladder(tmp_path / "runs", base=[0.40], var=[0.90])
    comp = compare([root])
    v = by_name(comp, "shared_loop")
    assert v.overall == "single seed: indicative only"
    assert all(r.status.startswith("indicative") and r.contrast.ci_low is None for r in v.results)
    write_report(comp, tmp_path / "out")
    assert "single seed: indicative only" in (tmp_path / "out" / "comparison.md").read_text()


def test_missing_and_partial_files_are_notes_not_crashes(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(root, "baseline", seed, 0.4, 0.1, bpb=None)  # perplexity unavailable
        fake_run(root, "shared_loop", seed, 0.5, 0.2, files=("config", "metrics", "algorithmic"))  # no summary
    fake_run(root, "act", 0, 0.3, 0.1, files=("config",))  # crashed at once: config only
    broken = fake_run(root, "latent", 0, 0.3, 0.1, files=("config", "summary"))
    (broken / "results_algorithmic.json").write_text("{not json")
    fake_run(root, "baseline", 2, 0.4, 0.1, files=("config", "summary", "metrics"))  # never evaluated
    aside = fake_run(root, "act", 1, 0.3, 0.1, files=("config",))
    aside.rename(aside.with_name("seed1.incomplete"))  # set aside by the ladder: not a run to compare
    stale = fake_run(root, "ssm", 0, 0.3, 0.1)  # evaluated before training went on
    summary = json.loads((stale / "summary.json").read_text())
    (stale / "summary.json").write_text(json.dumps({**summary, "best_step": 40}))
    res = json.loads((stale / "results_needle.json").read_text())
    (stale / "results_needle.json").write_text(json.dumps({**res, "meta": {**res["meta"], "train_step": 20}}))
    comp = compare([root])
    notes = "\n".join(comp.notes)
    assert "no summary.json (run unfinished or crashed)" in notes
    assert "perplexity not measured: no held-out text" in notes
    assert "results_algorithmic.json is unreadable" in notes
    assert "no results_needle.json (suite not evaluated)" in notes
    assert "results_needle.json evaluated a checkpoint of step 20, but the run's best_model.pt is from step 40" in notes
    v = by_name(comp, "shared_loop")
    status = {r.criterion.name: r.status for r in v.results}
    assert status["time"] == "n/a" and status["iid"] == MET
    assert status["bpb"] == MET  # both lack the suite: fell back to val_lang_bpb (2.5 vs 2.5)
    assert any("used val_lang_bpb" in n for n in v.notes)
    assert by_name(comp, "act").overall == "no data" and len(by_name(comp, "act").group.runs) == 1
    main = main_table(comp).set_index("group")
    assert main.loc["pico/baseline", "seeds"] == 3 and main.loc["pico/baseline", "IID EM %"] == "40.0 (n=2)"
    written = write_report(comp, tmp_path / "out")
    md = written["comparison.md"].read_text()
    assert "## Notes" in md and "no summary.json" in md and written["report.html"].is_file()


def test_no_baseline_means_no_verdict_but_a_note(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "shared_loop", 0, 0.5, 0.2)
    fake_run(root, "act", 0, 0.4, 0.2)
    comp = compare([root])
    assert comp.verdicts == [] and any("no baseline of size pico" in n for n in comp.notes)
    comp = compare([root / "pico" / "act"], baseline=root / "pico" / "shared_loop")  # explicit --baseline
    assert [(v.group.label, v.baseline.label) for v in comp.verdicts] == [("act", "shared_loop")]


# ---- CLIs ------------------------------------------------------------------------------------
def test_compare_cli_writes_outputs_and_rejects_a_missing_folder(tmp_path: Path) -> None:
    root = ladder(tmp_path / "runs", base=[0.40, 0.41], var=[0.50, 0.52], var_ood=[0.3, 0.31])
    r = run_cli("compare.py", str(root / "pico"), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pico/shared_loop vs pico/baseline:" in r.stdout
    assert (root / "pico" / "comparison" / "report.html").is_file()
    r = run_cli("compare.py", str(tmp_path / "nope"), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr


def test_ladder_rejects_unknown_variant_before_training(tmp_path: Path) -> None:
    r = run_cli("ladder.py", "--size", "pico", "--variants", "baseline,nope", "--", "--max_steps", "2",
                cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown variant 'nope'" in r.stderr
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="--seed is set by the ladder"):
        ladder_cli.main(["--size", "pico", "--runs_dir", str(tmp_path / "runs"), "--", "--seed", "3"])
    with pytest.raises(ConfigError, match="--batch_size must be (an integer )?>= 1"):  # train.py's checks, before any run
        ladder_cli.main(["--size", "pico", "--runs_dir", str(tmp_path / "runs"), "--", "--batch_size", "0"])
    with pytest.raises(SystemExit) as exc:
        ladder_cli.main(["--size", "pico", "--runs_dir", str(tmp_path / "runs"), "--", "--max_stepz", "3"])
    assert exc.value.code == 2
    assert not (tmp_path / "runs").exists()


def test_ladder_plans_skip_resume_restart_train(tmp_path: Path) -> None:
    run = tmp_path / "r"
    assert ladder_cli.plan_run(run) == "train"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert ladder_cli.plan_run(run) == "restart"  # stopped before its first checkpoint
    (run / "last.pt").write_bytes(b"x")
    assert ladder_cli.plan_run(run) == "resume"
    (run / "summary.json").write_text("{}")
    assert ladder_cli.plan_run(run) == "skip"


def test_ladder_skips_finished_runs_and_compares(tmp_path: Path, capsys) -> None:
    root = ladder(tmp_path / "runs", base=[0.40, 0.41], var=[0.50, 0.52], var_ood=[0.3, 0.31])
    code = ladder_cli.main(["--size", "pico", "--variants", "baseline,shared_loop", "--seeds", "0,1",
                            "--suite", "algorithmic", "--runs_dir", str(root)])
    out = capsys.readouterr().out
    assert code == 0 and "4 to skip" in out and "train.py" not in out and "eval_hub.py" not in out
    assert "pico/shared_loop vs pico/baseline: not shown" in out  # 2 seeds: IID +10.5 [+3.6, +17.4]
    assert (root / "pico" / "comparison" / "comparison.csv").is_file()


@pytest.mark.slow
def test_ladder_trains_evaluates_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    """A real 2-step pico run (train.py and eval_hub.py subprocesses) replacing a run that died
    before its first checkpoint; then the run 'interrupted' (summary.json removed) is resumed."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    train = ["--", "--max_steps", "2", "--eval_every", "2", "--batch_size", "2", "--seq_len", "32",
             "--eval_samples", "1", "--lang_dataset", "none", "--alg_tasks", "parity"]
    args = ["--size", "pico", "--variants", "baseline", "--seeds", "0", "--suite", "algorithmic",
            "--eval_args=--limit 1 --tasks parity"]
    run = tmp_path / "runs" / "pico" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")  # a run that died before its first checkpoint
    assert ladder_cli.main([*args, *train]) == 0
    assert "1 to restart" in capsys.readouterr().out
    assert (run.parent / "seed0.incomplete" / "config.json").read_text() == "{}"
    assert (run / "summary.json").is_file() and (run / "results_algorithmic@limit=1,tasks=parity.json").is_file()
    (run / "summary.json").unlink()
    assert ladder_cli.main([*args, "--no_eval", *train[:1], "--max_steps", "3", *train[3:]]) == 0
    out = capsys.readouterr().out
    assert "1 to resume" in out and "--resume" in out
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    assert (tmp_path / "runs" / "pico" / "comparison" / "comparison.md").is_file()
