"""`compare(paths, baseline)`: read every run under `paths`, group seeds, pick each group's baseline
(same size, same evaluation options and version) and judge it (`unified.compare.verdicts`);
the `Comparison` is what the tables and the report show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from unified.compare.runs import Run, current_version, find_runs, load_runs
from unified.compare.verdicts import GRID_OPTIONS, Group, Verdict, group_runs, verdict
from unified.errors import DataError


@dataclass
class Comparison:
    """Everything the tables and the report show."""

    runs: list[Run]
    groups: list[Group]
    verdicts: list[Verdict]
    notes: list[str]


def _mark(g: Group) -> str:
    """The group's eval version when it is not the current one (else "")."""
    return g.eval_version if g.eval_version and g.eval_version != current_version() else ""


def pick_baselines(groups: Sequence[Group], baseline_runs: Sequence[Run] | None) -> dict[tuple[str, str, str], Group]:
    """Baseline groups by (size, eval tag, non-current eval version): the groups holding
    `baseline_runs` when given (size "*" when they are of one size: the baseline of every size),
    else the groups of variant "baseline" without model overrides."""
    if baseline_runs:
        paths = {r.path.resolve() for r in baseline_runs}
        chosen = [g for g in groups if any(r.path.resolve() in paths for r in g.runs)]
        kinds = {(g.size, g.runs[0].variant, json.dumps(g.runs[0].overrides, sort_keys=True, default=str))
                 for g in chosen}
        if len({k[0] for k in kinds}) < len(kinds):
            raise DataError(f"--baseline holds runs of several variants of one size "
                            f"({', '.join(g.name for g in chosen)}); give the folder of one variant")
        one_size = len({g.size for g in chosen}) == 1
        return {("*" if one_size else g.size, g.eval_tag, _mark(g)): g for g in chosen}
    return {(g.size, g.eval_tag, _mark(g)): g for g in groups if g.variant == "baseline" and not g.runs[0].overrides}


def baseline_for(g: Group, baselines: dict[tuple[str, str, str], Group]) -> Group | None:
    """The baseline `g` is judged against: the one evaluated with the same options and version;
    for results that differ only by model overrides (e.g. @K=8: the grid is the same), the
    as-trained baseline; else None (not comparable)."""
    keys = [(size, g.eval_tag, _mark(g)) for size in (g.size, "*")]
    model_only = bool(g.eval_options) and not set(g.eval_options) & set(GRID_OPTIONS)
    if g.eval_tag and model_only:
        keys += [(size, "", _mark(g)) for size in (g.size, "*")]
    return next((baselines[k] for k in keys if k in baselines), None)


def compare(paths: Sequence[str | Path], baseline: str | Path | None = None) -> Comparison:
    """Read the runs under `paths` (and `baseline`), group them, and judge every group against
    its baseline. Raises DataError only for paths that do not exist or hold no run."""
    run_dirs = find_runs(paths)
    base_dirs = find_runs([baseline]) if baseline is not None else []
    for d in base_dirs:
        if d.resolve() not in {r.resolve() for r in run_dirs}:
            run_dirs.append(d)
    runs = [r for d in run_dirs for r in load_runs(d)]
    groups = group_runs(runs)
    base_runs = [r for r in runs if r.path.resolve() in {d.resolve() for d in base_dirs}]
    baselines = pick_baselines(groups, base_runs or None)
    notes: list[str] = []
    verdicts = []
    for g in groups:
        b = baseline_for(g, baselines)
        if b is None:
            if g.eval_tag or _mark(g):
                what = " and ".join(x for x in (f"options @{g.eval_tag}" if g.eval_tag else "",
                                                f"{{{_mark(g)}}}" if _mark(g) else "") if x)
                notes.append(f"{g.name}: no baseline of size {g.size} evaluated with the same {what}; no verdict "
                             f"(results of another grid or version are kept apart, never averaged or compared)")
            else:
                notes.append(f"{g.name}: no baseline of size {g.size} among the runs (pass --baseline RUN_DIR); "
                             f"no verdict")
        elif b is not g:
            verdicts.append(verdict(g, b))
    by_base: dict[tuple[str, str, str], set[str]] = {}
    for g in groups:
        if g.eval_version:
            by_base.setdefault((g.size, g.runs[0].variant, g.eval_tag), set()).add(g.eval_version)
    for (size, variant, tag), versions in by_base.items():
        if len(versions) > 1:
            notes.append(f"{size}/{variant}{'@' + tag if tag else ''}: runs evaluated under different versions "
                         f"({'; '.join(sorted(versions))}) are kept in separate groups, not averaged")
    for g in groups:
        ta = g.values("tokens")
        if len(set(ta)) > 1:
            notes.append(f"{g.name}: its seeds trained on different token budgets {sorted(set(ta))}")
        for r in g.runs:
            notes += [f"{r.path}: {n}" for n in r.notes]
    return Comparison(runs, groups, verdicts, notes)
