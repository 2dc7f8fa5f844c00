"""Groups of seeds and their verdicts: `group_runs` groups runs of the same (size, variant, model
overrides, eval options, eval version) over seeds, and `verdict` judges a group against its
baseline group with `CRITERIA` (`unified.compare.comparison.compare` does both for a set of runs).

Statistics (`unified.compare.stats`, documented in docs/comparing.md#verdicts-criteria-and-statistics):
- a group's metric is the mean over its seeds with a 95% t-interval, mean +- t(0.975, n-1) s/sqrt(n);
- a criterion is a linear contrast c = mean(variant) - k * mean(baseline) - delta whose sign says
  whether it holds; its 95% interval is Welch's (unequal variances, Welch-Satterthwaite degrees
  of freedom, variance s_a^2/n_a + k^2 s_b^2/n_b). A criterion is *met* only when the whole
  interval lies on the success side, *not met* when the whole interval lies on the failing side,
  and *not shown* when the interval straddles the threshold;
- with fewer than two seeds on either side there is no interval: the point estimate is reported
  as "indicative" and the overall verdict is "single seed: indicative only";
- accuracy criteria know each side's chance floor (best constant answer, from the results): a
  group is *at chance* when its interval reaches the floor (`at_chance`), and a criterion
  between two groups that are both at chance is never "met" (status "both at chance").
Missing files or keys never raise: they become notes shown in the report.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from unified.compare.runs import SUITE_NAMES, Run, companion, run_metrics
from unified.compare.stats import Z_975, Contrast, Estimate, estimate, welch_contrast


# ---- groups ----------------------------------------------------------------------------------
@dataclass
class Group:
    """Runs of one (size, variant, model overrides, eval options, eval version) over seeds, with
    their flat metrics."""

    size: str
    label: str
    variant: str
    runs: list[Run]
    metrics: list[dict[str, float]]

    @property
    def name(self) -> str:
        """"<size>/<label>", unique among groups."""
        return f"{self.size}/{self.label}"

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]

    def values(self, metric: str) -> list[float]:
        """The metric's value in every run that has it."""
        return [m[metric] for m in self.metrics if metric in m]

    def estimate(self, metric: str) -> Estimate | None:
        """Mean and 95% interval of `metric` over the group's runs."""
        return estimate(self.values(metric))

    def metric_names(self) -> set[str]:
        return {k for m in self.metrics for k in m}

    @property
    def eval_tag(self) -> str:
        """"" for as-trained results, else the eval-options tag its results files carry."""
        return self.runs[0].eval_tag

    @property
    def eval_options(self) -> dict[str, Any]:
        return self.runs[0].eval_options

    @property
    def eval_version(self) -> str:
        """The grid/harness version its results were evaluated under ("" without results)."""
        return next((r.eval_version for r in self.runs if r.eval_version), "")

    def floor(self, metric: str) -> float | None:
        """Mean chance floor of an exact-match metric over the runs that report one."""
        vals = self.values(companion(metric, "floor"))
        return statistics.fmean(vals) if vals else None

    def at_chance(self, metric: str) -> bool | None:
        """Whether the group's interval on `metric` reaches its chance floor (None: no floor).

        The lower end is the smaller of the seeds' t-interval and mean - 1.96 x the runs' own
        standard errors (sqrt(sum se^2) / n: each run's exact match is itself a sample), so a
        single seed is judged too."""
        floor, est = self.floor(metric), self.estimate(metric)
        if floor is None or est is None:
            return None
        ses = self.values(companion(metric, "se"))
        low = est.mean - Z_975 * math.sqrt(sum(x * x for x in ses)) / len(ses) if ses else est.mean
        if est.ci_low is not None:
            low = min(low, est.ci_low)
        return low <= floor + TOL


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs by (size, label): per size the baseline first, then in order of first
    appearance (the ladder passes its --variants order); seeds sorted within a group."""
    by_key: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        by_key.setdefault((r.size, r.label), []).append(r)
    groups = []
    for (size, label), members in by_key.items():
        members = sorted(members, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, str(r.path)))
        groups.append(Group(size, label, members[0].variant, members, [run_metrics(r) for r in members]))
    sizes = list(dict.fromkeys(g.size for g in groups))
    return sorted(groups, key=lambda g: (sizes.index(g.size), g.label != "baseline"))


# ---- verdicts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """A success criterion as the contrast c = mean(variant) - k mean(baseline) - delta; it holds
    when c >= 0 (higher=True, c > 0 if strict) or c <= 0 (higher=False)."""

    name: str
    metric: str
    description: str
    k: float = 1.0
    delta: float = 0.0
    higher: bool = True
    strict: bool = False
    unit: str = ""
    scale: float = 1.0  # display multiplier (100 for accuracies shown in points)
    fallback: str | None = None  # metric used when either side lacks `metric`
    chance: bool = False  # an exact match with a chance floor: never "met" when both sides are at chance


IID_MARGIN, TIME_FACTOR, BPB_FACTOR = 0.05, 2.0, 1.10
TOL = 1e-9
CRITERIA: tuple[Criterion, ...] = (
    Criterion("iid", "iid_em", "algorithmic IID exact match >= baseline + 5 points", delta=IID_MARGIN,
              unit=" pts", scale=100.0, chance=True),
    Criterion("ood", "ood_em", "OOD exact match > baseline", strict=True, unit=" pts", scale=100.0, chance=True),
    Criterion("time", "s_per_mtok", "training wall time per token <= 2x baseline", k=TIME_FACTOR, higher=False,
              unit=" s/Mtok"),
    Criterion("bpb", "bits_per_byte", "bits per byte <= 1.10x baseline (no perplexity collapse)", k=BPB_FACTOR,
              higher=False, unit=" bpb", fallback="val_lang_bpb"),
)
MET, NOT_MET, NOT_SHOWN, NA = "met", "not met", "not shown", "n/a"
INDICATIVE_MET, INDICATIVE_NOT = "indicative: met", "indicative: not met"
BOTH_AT_CHANCE = "both at chance"
# eval options that change the grid (results not comparable with another grid); the others
# (model overrides such as K or n_loops) keep the grid, so such groups are judged against the
# as-trained baseline
GRID_OPTIONS = ("tasks", "limit", "ood", "seed", "needle_lengths", "needle_factors", "depths", "needle_samples",
                "text_file", "ppl_dataset", "ppl_max_tokens", "ppl_prefix")


@dataclass
class CriterionResult:
    """One criterion's outcome for one variant group."""

    criterion: Criterion
    status: str
    contrast: Contrast | None
    ratio: float | None  # mean(variant) / mean(baseline)
    text: str
    at_chance: tuple[bool | None, bool | None] = (None, None)  # (variant, baseline); None: no floor


def judge(crit: Criterion, a: Sequence[float], b: Sequence[float]) -> CriterionResult:
    """Decide one criterion from the variant's values `a` and the baseline's values `b`."""
    if not a or not b:
        missing = "variant" if not a else "baseline"
        return CriterionResult(crit, NA, None, None, f"skipped: no {crit.metric} for the {missing}")
    c = welch_contrast(a, b, crit.k, crit.delta)
    mb = statistics.fmean(b)
    ratio = statistics.fmean(a) / mb if mb else None

    def holds(x: float) -> bool:  # TOL: a value exactly at the threshold is not lost to float rounding
        if crit.higher:
            return x > TOL if crit.strict else x >= -TOL
        return x <= TOL

    if c.ci_low is None:
        status = INDICATIVE_MET if holds(c.value) else INDICATIVE_NOT
    elif holds(c.ci_low) and holds(c.ci_high):
        status = MET
    elif not holds(c.ci_low) and not holds(c.ci_high):
        status = NOT_MET
    else:
        status = NOT_SHOWN
    return CriterionResult(crit, status, c, ratio, _criterion_text(crit, c, ratio))


def _criterion_text(crit: Criterion, c: Contrast, ratio: float | None) -> str:
    """Criterion numbers as text: variant - baseline with its interval for a difference (k = 1),
    else the ratio of means and the contrast with its interval."""
    sc = crit.scale
    shift = crit.delta if crit.k == 1.0 else 0.0  # differences are shown as variant - baseline
    ci = "" if c.ci_low is None else f" [{(c.ci_low + shift) * sc:+.3g}, {(c.ci_high + shift) * sc:+.3g}]"
    if crit.k == 1.0:
        need = f">= {crit.delta * sc:+g}" if not crit.strict else "> 0"
        return f"{(c.value + shift) * sc:+.3g}{crit.unit}{ci} (need {need})"
    r = "n/a" if ratio is None else f"{ratio:.2f}x"
    return f"{r} baseline (need <= {crit.k:g}x); variant - {crit.k:g} x baseline = {c.value * sc:+.3g}{crit.unit}{ci}"


def _with_chance(r: CriterionResult, group: Group, baseline: Group) -> CriterionResult:
    """Mark who is at chance on an accuracy criterion; an improvement between two groups that
    are both at chance is not an improvement: status BOTH_AT_CHANCE instead of (indicative) met."""
    metric = r.criterion.metric
    chance = (group.at_chance(metric), baseline.at_chance(metric))
    r.at_chance = chance
    marks = [f"{who} at chance (floor {group_floor * r.criterion.scale:.3g})"
             for who, flag, group_floor in (("variant", chance[0], group.floor(metric)),
                                           ("baseline", chance[1], baseline.floor(metric))) if flag]
    if marks:
        r.text += "; " + ", ".join(marks)
    if chance[0] and chance[1] and r.status in (MET, INDICATIVE_MET, NOT_SHOWN):
        r.status = BOTH_AT_CHANCE
    return r


@dataclass
class Verdict:
    """A variant group judged against its baseline group."""

    group: Group
    baseline: Group
    results: list[CriterionResult]
    overall: str
    text: str
    notes: list[str] = field(default_factory=list)


def verdict(group: Group, baseline: Group) -> Verdict:
    """Judge `group` against `baseline` on every criterion and sum up.

    overall: "success" (every criterion with data met), "fail" (some criterion not met),
    "not shown" (none failed, some inconclusive or with one value on a side), "single seed:
    indicative only" (a side has one run, so no interval), or "no data" (no criterion has data)."""
    results, notes = [], []
    for c in CRITERIA:
        a, b = group.values(c.metric), baseline.values(c.metric)
        if c.fallback and (not a or not b) and group.values(c.fallback) and baseline.values(c.fallback):
            a, b = group.values(c.fallback), baseline.values(c.fallback)
            notes.append(f"{c.name}: no {c.metric} on both sides (suite absent); used {c.fallback} "
                         f"(last training validation on held-out language data) instead")
        result = judge(c, a, b)
        if c.chance and result.status != NA:
            result = _with_chance(result, group, baseline)
        results.append(result)
    if group.size != baseline.size:
        notes.append(f"sizes differ ({group.size} vs baseline {baseline.size})")
    ta, tb = group.values("tokens"), baseline.values("tokens")
    if ta and tb and set(ta) != set(tb):
        notes.append(f"trained on different token budgets ({sorted(set(ta))} vs baseline {sorted(set(tb))}); "
                     f"accuracy differences are confounded")
    for suite in SUITE_NAMES:
        settings = {json.dumps(r.meta[suite].get(f"{suite}_settings"), sort_keys=True)
                    for r in [*group.runs, *baseline.runs] if suite in r.meta}
        if len(settings) > 1:
            notes.append(f"{suite} was evaluated with different settings across these runs; its numbers are "
                         f"not comparable")
    for r in results:
        if r.status == NA:
            notes.append(f"{r.criterion.name}: {r.text}")
    have = [r for r in results if r.status != NA]
    names = lambda rs: ", ".join(r.criterion.name for r in rs)  # noqa: E731
    if not have:
        return Verdict(group, baseline, results, "no data", "no criterion could be evaluated", notes)
    chance = [r for r in have if r.status == BOTH_AT_CHANCE]
    if min(len(group.runs), len(baseline.runs)) < 2:
        failing = [r for r in have if r.status == INDICATIVE_NOT]
        point = ("point estimates fail " + names(failing) if failing
                 else "point estimates meet every other criterion with data" if chance
                 else "point estimates meet every criterion with data")
        if chance:
            point += f"; both at chance on {names(chance)}"
        return Verdict(group, baseline, results, "single seed: indicative only",
                       f"one seed on one side, so no confidence interval; {point}", notes)
    failed = [r for r in have if r.status == NOT_MET]
    # indicative here: a metric that only one run of a side has, so it cannot be shown either;
    # both at chance: no improvement can be shown between two chance-level groups
    open_ = [r for r in have if r.status in (NOT_SHOWN, INDICATIVE_MET, INDICATIVE_NOT, BOTH_AT_CHANCE)]
    if failed:
        overall, text = "fail", f"not met beyond the 95% CI: {names(failed)}"
        if open_:
            text += f"; not shown: {names(open_)}"
    elif open_:
        overall, text = "not shown", f"not shown beyond the 95% CI for: {names(open_)}"
    else:
        overall, text = "success", f"all {len(have)} criteria with data met beyond the 95% CI"
    return Verdict(group, baseline, results, overall, text, notes)
