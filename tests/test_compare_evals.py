"""compare.py and the evaluation side: chance floors and 'at chance' verdicts, results evaluated
with non-default options (results_<suite>@<tag>.json) grouped apart, other grid versions never
averaged, and damaged or mistyped files turned into notes (issues 14, 15)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from helpers import run_cli
from test_compare import fake_run
from unified.compare.comparison import compare
from unified.compare.report import main_table, write_report
from unified.compare.verdicts import BOTH_AT_CHANCE, MET


def _status(comp, label: str) -> dict[str, str]:
    v = next(v for v in comp.verdicts if v.group.label == label)
    return {r.criterion.name: r.status for r in v.results}


def _tagged(run: Path, suite: str, tag: str, options: dict, payload: dict, grid: str | None = None) -> None:
    """A results_<suite>@<tag>.json beside the as-trained one, as eval_hub writes it."""
    base = json.loads((run / f"results_{suite}.json").read_text())
    meta = {**base["meta"], "eval_options": options, "eval_tag": tag, **({"grid_version": grid} if grid else {})}
    (run / f"results_{suite}@{tag}.json").write_text(json.dumps({"meta": meta, suite: payload}))


def test_improvement_between_two_chance_level_groups_is_never_met(tmp_path: Path) -> None:
    # parity-like cells: floor 0.5; the variant is +8 points over the baseline on IID with tight
    # seeds, which would be "met", but both sides' intervals reach the floor (0.44 / 0.52 +- 2 x 0.05)
    root = tmp_path / "runs"
    for seed in range(3):
        fake_run(root, "baseline", seed, 0.44 + seed / 1000, 0.40, floor=0.5, stderr=0.05)
        fake_run(root, "shared_loop", seed, 0.52 + seed / 1000, 0.60, floor=0.5, stderr=0.05)
    comp = compare([root])
    status = _status(comp, "shared_loop")
    assert status["iid"] == BOTH_AT_CHANCE and status["ood"] != BOTH_AT_CHANCE  # OOD 0.60: variant above chance
    v = comp.verdicts[0]
    iid = next(r for r in v.results if r.criterion.name == "iid")
    assert iid.at_chance == (True, True) and "variant at chance (floor 50)" in iid.text
    assert v.overall == "not shown" and "iid" in v.text
    main = main_table(comp).set_index("group")
    assert main.loc["pico/shared_loop", "IID EM %"] == "52.1 ± 0.2 (floor 50.0) at chance"
    assert main.loc["pico/shared_loop", "OOD EM %"] == "60.0 (floor 50.0)"
    md = write_report(comp, tmp_path / "out")["comparison.md"].read_text()
    assert "both at chance" in md and "(floor 50.0) at chance n=100" in md
    # the same numbers with a floor of 0.1: both are well above chance, and the criterion is met
    root2 = tmp_path / "runs2"
    for seed in range(3):
        fake_run(root2, "baseline", seed, 0.44 + seed / 1000, 0.40, floor=0.1, stderr=0.005)
        fake_run(root2, "shared_loop", seed, 0.52 + seed / 1000, 0.60, floor=0.1, stderr=0.005)
    assert _status(compare([root2]), "shared_loop")["iid"] == MET


def test_single_seed_at_chance_uses_the_runs_own_stderr(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fake_run(root, "baseline", 0, 0.31, 0.1, floor=0.30, stderr=0.05)
    fake_run(root, "shared_loop", 0, 0.38, 0.1, floor=0.30, stderr=0.05)
    comp = compare([root])
    assert _status(comp, "shared_loop")["iid"] == BOTH_AT_CHANCE  # 0.38 - 1.96 x 0.05 < 0.30
    assert "both at chance on iid" in comp.verdicts[0].text
    fake_run(root, "act", 0, 0.80, 0.1, floor=0.30, stderr=0.04)
    comp = compare([root])
    assert _status(comp, "act")["iid"] == "indicative: met"  # the variant is far above chance


def test_eval_option_results_are_their_own_groups(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in range(3):
        base = fake_run(root, "baseline", seed, 0.40 + seed / 100, 0.10)
        var = fake_run(root, "shared_loop", seed, 0.41 + seed / 100, 0.10)
        alg = json.loads((var / "results_algorithmic.json").read_text())["algorithmic"]
        _tagged(var, "algorithmic", "n_loops=6", {"n_loops": 6}, {**alg, "exact_match": 0.60 + seed / 100})
        _tagged(var, "algorithmic", "limit=10", {"limit": 10}, {**alg, "exact_match": 0.90})
        if seed < 2:  # a baseline evaluated on the same small grid, for two of its seeds
            b_alg = json.loads((base / "results_algorithmic.json").read_text())["algorithmic"]
            _tagged(base, "algorithmic", "limit=10", {"limit": 10}, {**b_alg, "exact_match": 0.20 + seed / 100})
    comp = compare([root])
    names = [g.name for g in comp.groups]
    assert {"pico/baseline", "pico/shared_loop", "pico/shared_loop@n_loops=6", "pico/shared_loop@limit=10",
            "pico/baseline@limit=10"} == set(names)
    by = {g.label: g for g in comp.groups}
    assert by["shared_loop"].estimate("iid_em").mean == pytest.approx(0.42)  # the as-trained file, untouched
    assert by["shared_loop@n_loops=6"].estimate("iid_em").mean == pytest.approx(0.61)
    pairs = {v.group.label: v.baseline.label for v in comp.verdicts}
    # model-only options keep the grid: judged against the as-trained baseline; a grid option
    # needs a baseline evaluated on the same grid
    assert pairs == {"shared_loop": "baseline", "shared_loop@n_loops=6": "baseline",
                     "shared_loop@limit=10": "baseline@limit=10"}
    assert _status(comp, "shared_loop@n_loops=6")["iid"] == MET
    csv = write_report(comp, tmp_path / "out")["comparison.csv"].read_text()
    assert "shared_loop@n_loops=6" in csv and "baseline@limit=10" in csv
    (root / "pico" / "baseline" / "seed0" / "results_algorithmic@limit=10.json").unlink()
    (root / "pico" / "baseline" / "seed1" / "results_algorithmic@limit=10.json").unlink()
    comp = compare([root])
    assert "shared_loop@limit=10" not in {v.group.label for v in comp.verdicts}
    assert any("pico/shared_loop@limit=10: no baseline of size pico evaluated with the same options @limit=10"
               in n for n in comp.notes)


def test_other_grid_versions_are_kept_apart_and_not_judged(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in range(2):
        fake_run(root, "baseline", seed, 0.4, 0.1)
        fake_run(root, "shared_loop", seed, 0.5, 0.2)
    old = fake_run(root, "shared_loop", 2, 0.9, 0.9)
    for suite in ("algorithmic", "needle", "perplexity"):
        path = old / f"results_{suite}.json"
        data = json.loads(path.read_text())
        data["meta"]["grid_version"] = "1"
        path.write_text(json.dumps(data))
    comp = compare([root])
    by = {g.label: g for g in comp.groups}
    old_label = next(label for label in by if label.startswith("shared_loop {grid 1"))
    assert len(by["shared_loop"].runs) == 2 and len(by[old_label].runs) == 1
    assert by["shared_loop"].estimate("iid_em").mean == pytest.approx(0.5)  # the old run is not averaged in
    assert old_label not in {v.group.label for v in comp.verdicts}
    notes = "\n".join(comp.notes)
    assert "kept in separate groups, not averaged" in notes and "no baseline of size pico evaluated" in notes


# ---- damaged and mistyped files --------------------------------------------------------------
WRONG = ([1, 2], "text", 3.5, None, True, {"a": {"b": []}})


def _paths(x, prefix=()):
    """Every key path in a JSON value."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


def _set(x, path, value):
    for k in path[:-1]:
        x = x[k]
    x[path[-1]] = value


@pytest.mark.parametrize("name", ["config.json", "summary.json", "results_algorithmic.json", "results_needle.json",
                                  "results_perplexity.json"])
def test_every_mistyped_field_is_tolerated(tmp_path: Path, name: str) -> None:
    """Each key of each file, replaced by a value of every wrong type (and the whole file by a
    non-object), leaves compare and the report running."""
    root = tmp_path / "runs"
    for seed in range(2):
        fake_run(root, "baseline", seed, 0.4, 0.1, floor=0.2)
    run = fake_run(root, "shared_loop", 0, 0.5, 0.2, floor=0.2)
    original = json.loads((run / name).read_text())
    rng = random.Random(0)
    cases = [(p, w) for p in _paths(original) for w in WRONG]
    for path, wrong in rng.sample(cases, min(len(cases), 40)) + [((), [1]), ((), "x")]:
        data = json.loads(json.dumps(original))
        if path:
            _set(data, path, wrong)
        else:
            data = wrong
        (run / name).write_text(json.dumps(data))
        comp = compare([root])  # must not raise
        main_table(comp)
    write_report(comp, tmp_path / "out")


def test_damaged_metrics_and_binary_files_are_notes(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in range(2):
        fake_run(root, "baseline", seed, 0.4, 0.1)
    a = fake_run(root, "shared_loop", 0, 0.5, 0.2)
    b = fake_run(root, "shared_loop", 1, 0.5, 0.2)
    lines = (a / "metrics.jsonl").read_text().splitlines()
    (a / "metrics.jsonl").write_text("\n".join([lines[0], "[1, 2]", '"a string"', "17", lines[1],
                                                '{"kind": "resume", "step": "x"}', *lines[2:]]) + "\n")
    (b / "metrics.jsonl").write_bytes(bytes(range(256)) * 8)
    (b / "results_needle.json").write_bytes(b"\xff\xfe\x00binary")
    (b / "config.json").write_bytes(b"\x80\x81")
    comp = compare([root])
    notes = "\n".join(comp.notes)
    assert "metrics.jsonl: 4 damaged line(s) skipped (line 2 is not a metrics record" in notes
    assert "results_needle.json is unreadable" in notes and "config.json is unreadable" in notes
    good = next(r for r in comp.runs if r.path == a)
    assert [m["step"] for m in good.metrics if m.get("kind") == "train"] == [1, 2, 3]  # the good lines kept
    write_report(comp, tmp_path / "out")
    r = run_cli("compare.py", str(root), "--out", str(tmp_path / "cli"), cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
