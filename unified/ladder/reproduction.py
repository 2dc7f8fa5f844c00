"""A preset's verdict: its criteria judged on the measured runs, `reproduction.md`, a figure and a
machine-readable `reproduction.json` in the preset's ladder folder.

Statistics are compare.py's (`unified.compare`): a row is a `Group` of its seeds; an absolute
criterion ("hrnn OOD exact match >= 0.95") is judged on the row's 95% t-interval over seeds (met
only when the whole interval is on the success side, not met when it is wholly on the failing
side, not shown otherwise); a relative one ("ssm_signed > ssm") is compare's Welch contrast
(`judge`). With one seed there is no interval across seeds: the outcome is *indicative*, and the
interval shown is the evaluation-sampling one (Wilson's 95% interval over the cell's distinct
examples for an accuracy, else mean +- 1.96 x the run's standard error). Every
accuracy cell shows its chance floor (best constant answer, from the results); a relative
criterion between two rows that are both at chance is "both at chance", never met.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from unified.compare.runs import Run, companion, is_run_dir, load_runs, run_metrics
from unified.compare.stats import Z_975
from unified.compare.verdicts import (BOTH_AT_CHANCE, INDICATIVE_MET, INDICATIVE_NOT, MET, NA, NOT_MET, NOT_SHOWN, TOL,
                                      Criterion, Group, judge)
from unified.ladder.presets import Preset, PresetCriterion, Row

REPRODUCED, NOT_REPRODUCED, INDICATIVE = "reproduced", "not reproduced", "single seed: indicative only"


def cell_metrics(run: Run) -> dict[str, float]:
    """`run_metrics`, plus one IID cell per training difficulty: iid_em/<task>/d<k> with its
    floor, standard error and distinct count (companion names, as compare.py uses them)."""
    out = run_metrics(run)
    alg = run.results.get("algorithmic") or {}
    for task, entry in (alg.get("tasks") or {}).items():
        by_d = ((entry or {}).get("iid") or {}).get("by_difficulty") or {}
        for d, cell in by_d.items():
            key = f"iid_em/{task}/d{d}"
            for name, field_ in ((key, "exact_match"), (companion(key, "floor"), "floor"),
                                 (companion(key, "se"), "exact_match_stderr"), (companion(key, "n"), "n_distinct")):
                value = (cell or {}).get(field_)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    out[name] = float(value)
    return out


def pick_run(runs: Sequence[Run]) -> Run:
    """The results a preset reads from one folder: the as-trained ones when evaluated, else the
    eval-options set (e.g. @tasks=parity) holding the most suites."""
    with_results = [r for r in runs if r.results]
    if not with_results:
        return runs[0]
    if runs[0].results:
        return runs[0]
    return max(with_results, key=lambda r: len(r.results))


def row_group(row: Row, dirs: Sequence[Path], size: str) -> Group:
    """The runs of one preset row (its seeds) as a compare.py `Group` with `cell_metrics`."""
    runs = [pick_run(load_runs(d)) for d in dirs if is_run_dir(Path(d))]
    return Group(size, row.name, row.variant, runs, [cell_metrics(r) for r in runs])


# ---- judging ----------------------------------------------------------------------------------
@dataclass
class CellOutcome:
    """A criterion at one cell (metric)."""

    metric: str
    status: str
    measured: str
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    floor: float | None = None
    at_chance: bool | None = None


@dataclass
class Outcome:
    """A criterion over all its cells; `status` combines them (met only if every cell is met)."""

    criterion: PresetCriterion
    cells: list[CellOutcome]
    status: str


def has_cells(metric: str) -> bool:
    """Exact-match metrics (iid_em..., ood_em...) carry companions: floor, standard error, n."""
    return "_em" in metric.split("/")[0]


def is_accuracy(metric: str) -> bool:
    """Exact-match and needle metrics are fractions shown in percent."""
    return "_em" in metric.split("/")[0] or metric.startswith("needle")


def show(x: float | None, metric: str) -> str:
    """A value as text: percent for accuracies, 4 significant digits otherwise."""
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if is_accuracy(metric) else f"{x:.4g}"


def wilson(p: float, n: int, z: float = Z_975) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion p over n examples (never [1, 1] at p = 1)."""
    if n < 1:
        return p, p
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def _holds(x: float, op: str, value: float) -> bool:
    return {">=": x >= value - TOL, ">": x > value + TOL, "<=": x <= value + TOL, "<": x < value - TOL}[op]


def judge_absolute(crit: PresetCriterion, group: Group, metric: str) -> CellOutcome:
    """mean(row) op value on the row's interval over seeds (indicative with one seed)."""
    est = group.estimate(metric)
    floor, chance = (group.floor(metric), group.at_chance(metric)) if has_cells(metric) else (None, None)
    if est is None:
        return CellOutcome(metric, NA, f"no {metric} for {group.label}", floor=floor)
    low, high, how = est.ci_low, est.ci_high, "95% CI over seeds"
    if low is None:
        status = INDICATIVE_MET if _holds(est.mean, crit.op, crit.value) else INDICATIVE_NOT
        cells = has_cells(metric)
        ns = group.values(companion(metric, "n")) if cells else []
        ses = group.values(companion(metric, "se")) if cells else []
        if ns:
            low, high = wilson(est.mean, int(ns[0]))
            how = "eval sampling only, Wilson"
        elif ses and ses[0] > 0:
            low, high, how = est.mean - Z_975 * ses[0], est.mean + Z_975 * ses[0], "eval sampling only"
    elif _holds(low, crit.op, crit.value) and _holds(high, crit.op, crit.value):
        status = MET
    elif not _holds(low, crit.op, crit.value) and not _holds(high, crit.op, crit.value):
        status = NOT_MET
    else:
        status = NOT_SHOWN
    ci = "" if low is None else f" [{show(low, metric)}, {show(high, metric)}] ({how})"
    text = f"{show(est.mean, metric)}{ci}; need {crit.op} {show(crit.value, metric)}" + ("; at chance" if chance else "")
    return CellOutcome(metric, status, text, est.mean, low, high, floor, chance)


def judge_relative(crit: PresetCriterion, group: Group, other: Group, metric: str,
                   other_metric: str | None = None) -> CellOutcome:
    """mean(row, metric) - k mean(vs, other_metric) - delta op 0 with compare.py's Welch interval
    and chance marking (other_metric defaults to metric)."""
    om = other_metric or metric
    c = Criterion(crit.text, metric, crit.text, k=crit.k, delta=crit.delta, higher=crit.higher,
                  strict=crit.op == ">", scale=100.0 if is_accuracy(metric) else 1.0,
                  unit=" pts" if is_accuracy(metric) else "", chance=is_accuracy(metric))
    r = judge(c, group.values(metric), other.values(om))
    acc = has_cells(metric)
    floor = group.floor(metric) if acc else None
    chance = (group.at_chance(metric), other.at_chance(om)) if acc else (None, None)
    status = r.status
    if crit.k == 1.0:  # a difference: compare's text (variant - other with its interval), our own "need"
        text = r.text.rsplit(" (need", 1)[0] + f" (need {crit.op} {crit.delta * c.scale:+g}{c.unit})"
    else:  # a ratio: mean(row) / mean(other) and the contrast row - k x other with its interval
        cc = r.contrast
        ci = "" if cc is None or cc.ci_low is None else f" [{cc.ci_low:+.3g}, {cc.ci_high:+.3g}]"
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
        text = (f"{ratio} the other (need {crit.op} {crit.k:g}x); row - {crit.k:g} x other = "
                f"{cc.value if cc else float('nan'):+.3g}{ci}")
    if chance[0] and chance[1] and status in (MET, INDICATIVE_MET, NOT_SHOWN):
        status = BOTH_AT_CHANCE
    if any(chance):
        text += "; at chance: " + ", ".join(n for n, f in ((group.label, chance[0]), (other.label, chance[1])) if f)
    means = (group.estimate(metric), other.estimate(om))
    names = (group.label, other.label) if om == metric else (f"{group.label} {metric}", f"{other.label} {om}")
    head = " vs ".join(f"{n} {show(e.mean if e else None, metric)}" for n, e in zip(names, means))
    cc = r.contrast
    return CellOutcome(metric, status, f"{head}: {text}", cc.value if cc else None, cc.ci_low if cc else None,
                       cc.ci_high if cc else None, floor, chance[0])


def _cell_order(metric: str) -> tuple:
    parts = metric.split("/")
    tail = parts[-1].lstrip("d")
    return (parts[:-1], float(tail) if tail.replace(".", "", 1).isdigit() else math.inf, parts[-1])


def combine(statuses: Sequence[str]) -> str:
    """Every cell met -> met; any not met -> not met; otherwise the open outcome."""
    have = [s for s in statuses if s != NA]
    if not have:
        return NA
    for s in (NOT_MET, INDICATIVE_NOT, BOTH_AT_CHANCE, NOT_SHOWN, INDICATIVE_MET):
        if s in have:
            return s
    return MET


def evaluate(preset: Preset, groups: dict[str, Group]) -> list[Outcome]:
    """Judge every criterion of the preset on the row groups."""
    outcomes = []
    for crit in preset.criteria:
        g = groups[crit.row]
        relative = crit.vs is not None or crit.vs_metric is not None
        other = groups[crit.vs] if crit.vs else g
        names = g.metric_names() | other.metric_names()
        metrics: list[str] = []
        for pat in crit.metric if isinstance(crit.metric, list) else [crit.metric]:
            if "*" in pat or "?" in pat or "[" in pat:
                metrics += sorted((m for m in names if fnmatch.fnmatchcase(m, pat)), key=_cell_order)
            else:
                metrics.append(pat)
        metrics = list(dict.fromkeys(metrics))
        cells = [judge_relative(crit, g, other, m, crit.vs_metric) if relative else judge_absolute(crit, g, m)
                 for m in metrics]
        if not cells:
            cells = [CellOutcome(str(crit.metric), NA, f"no metric matches {crit.metric!r}")]
        outcomes.append(Outcome(crit, cells, combine([c.status for c in cells])))
    return outcomes


def overall(outcomes: Sequence[Outcome]) -> str:
    """The preset's verdict: reproduced (every criterion met), not reproduced (one not met),
    single seed: indicative only, or not shown."""
    statuses = [o.status for o in outcomes if o.status != NA]
    if not statuses:
        return "no data"
    if all(s == MET for s in statuses):
        return REPRODUCED
    if NOT_MET in statuses:
        return NOT_REPRODUCED
    if any(s.startswith("indicative") for s in statuses):
        return INDICATIVE
    return NOT_SHOWN


# ---- the report -------------------------------------------------------------------------------
def machine_text() -> str:
    """This machine in one line (for the report)."""
    import torch

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else platform.platform())


def _est_text(g: Group, metric: str) -> str:
    e = g.estimate(metric)
    if e is None:
        return "-"
    hw = e.half_width
    text = show(e.mean, metric) + (f" ± {show(hw, metric)}" if hw else "")
    floor = g.floor(metric)
    return text + (f" (floor {show(floor, metric)})" if floor is not None else "")


def rows_table(preset: Preset, groups: dict[str, Group], cells: Sequence[str]) -> list[str]:
    """One line per row: variant and options, seeds, parameters, state size, train and eval time,
    and each cell's mean ± 95% half-width with its chance floor."""
    head = ["row", "variant [options]", "seeds", "params", "state size", "train s", *cells]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in preset.rows:
        g = groups[row.name]
        opts = ",".join(f"{k}={v}" for k, v in row.options.items())
        est = {m: g.estimate(m) for m in ("params", "state_size", "wall_time_s")}
        nums = [f"{est[m].mean:,.0f}" if est[m] else "-" for m in ("params", "state_size", "wall_time_s")]
        lines.append(f"| {row.name} | {row.variant}{f' [{opts}]' if opts else ''} | {len(g.runs)} | "
                     + " | ".join(nums) + " | " + " | ".join(_est_text(g, c) for c in cells) + " |")
    return lines


def hypotheses_table(preset: Preset, outcomes: Sequence[Outcome]) -> list[str]:
    """The rows x columns table of criteria that name a `column`: hypothesised vs measured."""
    cols = list(dict.fromkeys(o.criterion.column for o in outcomes if o.criterion.column))
    if not cols:
        return []
    lines = ["| row | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in preset.rows:
        cells = []
        for col in cols:
            o = next((o for o in outcomes if o.criterion.row == row.name and o.criterion.column == col), None)
            if o is None:
                cells.append("-")
                continue
            c = o.cells[0]
            cells.append(f"hyp. {o.criterion.published or o.criterion.op + ' ' + str(o.criterion.value)} / "
                         f"measured {c.measured.split(';')[0]} / **{o.status}**")
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def report_cells(preset: Preset, groups: dict[str, Group]) -> list[str]:
    """Cells for the rows table: those the criteria and the figure use, in natural order."""
    names = set().union(*(g.metric_names() for g in groups.values())) if groups else set()
    pats = [m for c in preset.criteria for m in (c.metric if isinstance(c.metric, list) else [c.metric])]
    pats += [c.vs_metric for c in preset.criteria if c.vs_metric] + ["iid_em", "ood_em"]
    task = preset.figure.get("task") or []
    for t in task if isinstance(task, list) else [task]:
        pats += [f"iid_em/{t}", f"ood_em/{t}/*"]
    out = [m for m in names if any(fnmatch.fnmatchcase(m, p) for p in pats)]
    return sorted(dict.fromkeys(out), key=lambda m: (not m.startswith("iid"), _cell_order(m)))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def write_reproduction(preset: Preset, groups: dict[str, Group], out_dir: str | Path, *, size: str,
                       command: str, elapsed_s: float | None = None, selection: Sequence[Any] = (),
                       failed: Sequence[str] = (), trained: Sequence[Path] = ()) -> tuple[Path, str]:
    """Write reproduction.md, reproduction.png and reproduction.json into `out_dir`; returns the
    path of reproduction.md and the verdict. `trained`: every run folder the ladder trained (with
    an lr grid, the rates not selected too), for the training time; default the rows' runs."""
    from unified.ladder.reproduction_figure import draw_figure
    from unified.ladder.tuning import selection_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = evaluate(preset, groups)
    verdict = overall(outcomes)
    train_s = sum(v for g in groups.values() for v in g.values("wall_time_s"))
    if trained:
        summaries = [Path(d) / "summary.json" for d in trained]
        train_s = sum(float(json.loads(f.read_text()).get("wall_time_s") or 0) for f in summaries if f.is_file())
    eval_s = sum(float(m.get("wall_time_s") or 0) for g in groups.values() for r in g.runs for m in r.meta.values())
    seeds = sorted({s for g in groups.values() for s in g.seeds if s is not None})
    lines = [f"# Reproduction: {preset.title}", "",
             f"**Source**: {preset.citation}" + (f" ({preset.url})" if preset.url else ""), "",
             f"**Published**: {preset.claim}", "",
             f"**Command**: `{command}`  ", f"**Scale**: {size}; seeds {', '.join(map(str, seeds)) or '-'}  ",
             f"**Machine**: {machine_text()}  ",
             f"**Time**: training {_duration(train_s)} + evaluation {_duration(eval_s)} (sum over "
             f"{len(trained) or sum(len(g.runs) for g in groups.values())} trained runs)"
             + (f"; this ladder call {elapsed_s / 60:.1f} min" if elapsed_s is not None else ""), "",
             f"## Verdict: {verdict}", ""]
    if preset.note:
        lines += [preset.note.strip(), ""]
    lines += ["| criterion | cell | published | measured | chance floor | status |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        for c in o.cells:
            lines.append(f"| {o.criterion.text} | {c.metric} | {o.criterion.published or '-'} | {c.measured} | "
                         f"{show(c.floor, c.metric) if c.floor is not None else '-'} | **{c.status}** |")
    lines += ["", f"Per criterion: " + "; ".join(f"{o.criterion.text}: **{o.status}**" for o in outcomes), ""]
    hyp = hypotheses_table(preset, outcomes)
    if hyp:
        lines += ["## Hypotheses table (hypothesised / measured / status)", "", *hyp, ""]
    published = [r for r in preset.rows if r.published]
    if published:
        lines += ["## Published per row", "", "| row | published |", "|---|---|",
                  *(f"| {r.name} | {r.published} |" for r in published), ""]
    lines += ["## Measured (mean ± 95% half-width over seeds; floor = best constant answer)", "",
              *rows_table(preset, groups, report_cells(preset, groups)), ""]
    if selection:
        lines += ["## Learning-rate selection", "", selection_markdown(selection)]
    fig = draw_figure(preset, groups, outcomes, out / "reproduction.png")
    if fig:
        lines += [f"![figure]({fig.name})", ""]
    notes = [*(f"failed: {f}" for f in failed),
             *(f"{g.label}: no finished run" for g in groups.values() if not g.runs),
             *(f"{r.path}: {n}" for g in groups.values() for r in g.runs for n in r.notes)]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    lines += ["Statistics: as compare.py (95% t-interval over seeds; Welch contrasts between rows; met only "
              "beyond the interval). One seed gives indicative outcomes only.", ""]
    (out / "reproduction.md").write_text("\n".join(lines), encoding="utf-8")
    record = {"preset": preset.name, "size": size, "verdict": verdict, "command": command, "seeds": seeds,
              "train_s": train_s, "eval_s": eval_s, "elapsed_s": elapsed_s, "failed": list(failed),
              "criteria": [{"text": o.criterion.text, "row": o.criterion.row, "status": o.status,
                            "cells": [asdict(c) for c in o.cells]} for o in outcomes],
              "selection": [asdict(s) for s in selection]}
    (out / "reproduction.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return out / "reproduction.md", verdict


def groups_for(preset: Preset, dirs: dict[str, Sequence[Path]], size: str) -> dict[str, Group]:
    """A `Group` per preset row from its run folders."""
    return {row.name: row_group(row, dirs.get(row.name, []), size) for row in preset.rows}

