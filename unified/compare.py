"""Comparing runs: read run folders, group seeds, tables with 95% CIs, and verdicts.

`compare(paths, baseline)` reads every run folder (DESIGN contract 5 files plus the
`results_<suite>.json` of contract 4), flattens each run into named metrics (`run_metrics`, the
one place that knows the results keys), groups runs of the same (size, variant, model overrides)
over seeds, and judges each group against its baseline group with `CRITERIA`.

Statistics (documented in docs/compare.md):
- a group's metric is the mean over its seeds with a 95% t-interval, mean +- t(0.975, n-1) s/sqrt(n);
- a criterion is a linear contrast c = mean(variant) - k * mean(baseline) - delta whose sign says
  whether it holds; its 95% interval is Welch's (unequal variances, Welch-Satterthwaite degrees
  of freedom, variance s_a^2/n_a + k^2 s_b^2/n_b). A criterion is *met* only when the whole
  interval lies on the success side, *not met* when the whole interval lies on the failing side,
  and *not shown* when the interval straddles the threshold;
- with fewer than two seeds on either side there is no interval: the point estimate is reported
  as "indicative" and the overall verdict is "single seed: indicative only".
Missing files or keys never raise: they become notes shown in the report.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from unified.errors import DataError
from unified.runlog import read_metrics

SUITE_NAMES = ("algorithmic", "needle", "perplexity")
SET_ASIDE = ".incomplete"  # ladder.py renames runs that stopped before a checkpoint to seed<k>.incomplete[N]
CONFIDENCE = 0.95
# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30 (used when scipy is absent).
T_TABLE_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
               2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
               2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z_975 = 1.959964


# ---- statistics ------------------------------------------------------------------------------
def t_quantile_table(df: float) -> float:
    """t(0.975, df) without scipy: the table for df <= 30, with a non-integer df (Welch) rounded
    down, which is conservative (the interval is never narrower than the exact one); above 30 the
    Cornish-Fisher expansion (error < 1e-4)."""
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return T_TABLE_975[int(math.floor(df)) - 1]
    z = Z_975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_quantile(df: float) -> float:
    """t(0.975, df): scipy's when installed (it is optional), else `t_quantile_table`."""
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return t_quantile_table(df)
    return float(student_t.ppf(0.5 + CONFIDENCE / 2, df))


@dataclass
class Estimate:
    """Mean of one metric over a group's seeds, with its 95% interval (None below two values)."""

    mean: float
    n: int
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (None without an interval)."""
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def estimate(values: Sequence[float]) -> Estimate | None:
    """Mean and 95% t-interval of `values` (None when empty; no interval for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return Estimate(mean, 1)
    std = statistics.stdev(vals)
    half = t_quantile(len(vals) - 1) * std / math.sqrt(len(vals))
    return Estimate(mean, len(vals), std, mean - half, mean + half)


@dataclass
class Contrast:
    """c = mean(a) - k * mean(b) - delta with its Welch 95% interval (None if either side has < 2)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    df: float | None
    n_a: int
    n_b: int


def welch_contrast(a: Sequence[float], b: Sequence[float], k: float = 1.0, delta: float = 0.0) -> Contrast:
    """The contrast mean(a) - k mean(b) - delta and its Welch-Satterthwaite 95% interval. When
    both samples have zero spread the interval is the point itself."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    value = ma - k * mb - delta
    if len(a) < 2 or len(b) < 2:
        return Contrast(value, None, None, None, len(a), len(b))
    va = statistics.variance(a) / len(a)
    vb = k * k * statistics.variance(b) / len(b)
    var = va + vb
    if var == 0.0:
        return Contrast(value, value, value, math.inf, len(a), len(b))
    df = var ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(df) * math.sqrt(var)
    return Contrast(value, value - half, value + half, df, len(a), len(b))


# ---- reading runs ----------------------------------------------------------------------------
def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{path.name} is unreadable ({type(exc).__name__}); ignored")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name} does not hold a JSON object; ignored")
        return None
    return data


@dataclass
class Run:
    """One run folder: its files as read (missing ones None / empty) and notes on what was missing."""

    path: Path
    variant: str
    size: str
    seed: int | None
    overrides: dict[str, Any]
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    results: dict[str, dict[str, Any]]
    meta: dict[str, dict[str, Any]]  # suite -> its results file's meta
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Group label: the variant, with its model overrides when it has any."""
        if not self.overrides:
            return self.variant
        return f"{self.variant}[{','.join(f'{k}={v}' for k, v in sorted(self.overrides.items()))}]"


def is_run_dir(path: Path) -> bool:
    """A run folder holds config.json, summary.json or a results file."""
    return path.is_dir() and ((path / "config.json").is_file() or (path / "summary.json").is_file()
                              or any(path.glob("results_*.json")))


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named by `paths`: each path is a run folder or a folder searched recursively
    for run folders (`comparison` and set-aside `*.incomplete*` folders are skipped). A path that does not exist, or
    holds no run, is a DataError."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"run folder {str(p)!r} does not exist; give run folders (with config.json / "
                            f"summary.json) or a folder that contains them")
        if is_run_dir(p):
            runs = [p]
        else:
            runs = sorted(d for d in p.rglob("*") if is_run_dir(d) and not any(
                part == "comparison" or SET_ASIDE in part for part in d.relative_to(p).parts))
        if not runs:
            raise DataError(f"{str(p)!r} holds no run folder (none with config.json, summary.json or results_*.json)")
        found += [r for r in runs if r.resolve() not in {f.resolve() for f in found}]
    return found


def load_run(path: str | Path) -> Run:
    """Read one run folder; every missing or unreadable file becomes a note, never an error."""
    path = Path(path)
    notes: list[str] = []
    config = _read_json(path / "config.json", notes)
    summary = _read_json(path / "summary.json", notes)
    metrics = read_metrics(path / "metrics.jsonl")
    for name, data in (("config.json", config), ("summary.json", summary)):
        if data is None and not any(n.startswith(name) for n in notes):
            notes.append(f"no {name}" + (" (run unfinished or crashed)" if name == "summary.json" else ""))
    if not metrics:
        notes.append("no metrics.jsonl records")
    results: dict[str, dict[str, Any]] = {}
    metas: dict[str, dict[str, Any]] = {}
    combined = _read_json(path / "results_all.json", notes) or {}
    best = (summary or {}).get("best_step")
    for suite in SUITE_NAMES:
        data = _read_json(path / f"results_{suite}.json", notes) or {}
        payload = data.get(suite)
        if payload is None and isinstance(combined.get("all"), dict):
            payload, data = combined["all"].get(suite), combined
        if not isinstance(payload, dict):
            notes.append(f"no results_{suite}.json (suite not evaluated)")
            continue
        results[suite] = payload
        metas[suite] = data["meta"] if isinstance(data.get("meta"), dict) else {}
        if suite == "perplexity" and payload.get("available") is False:
            notes.append(f"perplexity not measured: {payload.get('reason', 'no reason given')}")
        step = metas[suite].get("train_step")
        if best is not None and step is not None and step != best:
            notes.append(f"results_{suite}.json evaluated a checkpoint of step {step}, but the run's best_model.pt "
                         f"is from step {best}: stale results, re-run eval_hub.py")
    meta = next(iter(metas.values()), {})
    model = (config or {}).get("model") or {}
    variant = (config or {}).get("variant") or (summary or {}).get("variant") or model.get("variant") \
        or meta.get("variant") or "unknown"
    size = (config or {}).get("model_size") or (summary or {}).get("size") or model.get("size") \
        or meta.get("size") or "unknown"
    seed = (config or {}).get("seed", (summary or {}).get("seed"))
    if variant == "unknown":
        notes.append("variant unknown (no config.json, summary.json or results meta)")
    overrides = {k: v for k, v in ((config or {}).get("model_overrides") or {}).items() if k != "max_seq_len"}
    return Run(path, variant, size, seed, overrides, config, summary, metrics, results, metas, notes)


def _num(x: Any) -> float | None:
    """x as a finite float, else None (results files write non-finite numbers as null)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def run_metrics(run: Run) -> dict[str, float]:
    """Every number compared, flat: the one place that knows the summary / results keys.

    Accuracies are fractions in [0, 1]. Keys: params, trainable_params, frozen_params,
    flops_per_token, state_size, tokens, wall_time_s, tokens_per_s, s_per_mtok (wall seconds per
    million training tokens), final_loss, best_val_loss, iid_em, ood_em, iid_em/<task>,
    ood_em/<task>/<length>, mean_steps, needle_acc, needle_acc/<length>, needle/<length>/<depth>,
    bits_per_byte, token_perplexity, word_perplexity, val_lang_bpb."""
    s, out = run.summary or {}, {}
    model = (run.config or {}).get("model") or {}
    for key in ("params", "trainable_params", "frozen_params"):
        out[key] = _num(s.get(key, model.get(key)))
    for key in ("flops_per_token", "state_size", "tokens", "wall_time_s", "tokens_per_s", "final_loss", "best_val_loss"):
        out[key] = _num(s.get(key))
    if out["tokens"] and out["wall_time_s"] is not None:
        out["s_per_mtok"] = out["wall_time_s"] / out["tokens"] * 1e6
    vals = [r for r in run.metrics if r.get("kind") == "val"]
    if vals:
        out["val_lang_bpb"] = _num(vals[-1].get("val_lang_bpb"))
    alg = run.results.get("algorithmic")
    if alg:
        out["iid_em"], out["ood_em"] = _num(alg.get("exact_match")), _num(alg.get("ood_exact_match"))
        out["mean_steps"] = _num(alg.get("mean_steps"))
        for task, entry in (alg.get("tasks") or {}).items():
            out[f"iid_em/{task}"] = _num(((entry or {}).get("iid") or {}).get("exact_match"))
            for length, cell in ((entry or {}).get("ood") or {}).items():
                out[f"ood_em/{task}/{length}"] = _num((cell or {}).get("exact_match"))
    train = [r for r in run.metrics if r.get("kind") == "train" and "mean_steps" in r]
    if out.get("mean_steps") is None and train:
        out["mean_steps"] = _num(train[-1]["mean_steps"])
    needle = run.results.get("needle")
    if needle:
        out["needle_acc"] = _num(needle.get("accuracy"))
        for length, entry in (needle.get("lengths") or {}).items():
            out[f"needle_acc/{length}"] = _num((entry or {}).get("accuracy"))
            for depth, cell in ((entry or {}).get("depths") or {}).items():
                out[f"needle/{length}/{depth}"] = _num((cell or {}).get("accuracy"))
    ppl = run.results.get("perplexity")
    if ppl and ppl.get("available", True):
        out["bits_per_byte"] = _num(ppl.get("bits_per_byte"))
        out["token_perplexity"] = _num(ppl.get("token_perplexity", ppl.get("perplexity")))
        out["word_perplexity"] = _num(ppl.get("word_perplexity"))
    return {k: v for k, v in out.items() if v is not None}


# ---- groups ----------------------------------------------------------------------------------
@dataclass
class Group:
    """Runs of one (size, variant, model overrides) over seeds, with their flat metrics."""

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


IID_MARGIN, TIME_FACTOR, BPB_FACTOR = 0.05, 2.0, 1.10
TOL = 1e-9
CRITERIA: tuple[Criterion, ...] = (
    Criterion("iid", "iid_em", "algorithmic IID exact match >= baseline + 5 points", delta=IID_MARGIN,
              unit=" pts", scale=100.0),
    Criterion("ood", "ood_em", "OOD exact match > baseline", strict=True, unit=" pts", scale=100.0),
    Criterion("time", "s_per_mtok", "training wall time per token <= 2x baseline", k=TIME_FACTOR, higher=False,
              unit=" s/Mtok"),
    Criterion("bpb", "bits_per_byte", "bits per byte <= 1.10x baseline (no perplexity collapse)", k=BPB_FACTOR,
              higher=False, unit=" bpb", fallback="val_lang_bpb"),
)
MET, NOT_MET, NOT_SHOWN, NA = "met", "not met", "not shown", "n/a"
INDICATIVE_MET, INDICATIVE_NOT = "indicative: met", "indicative: not met"


@dataclass
class CriterionResult:
    """One criterion's outcome for one variant group."""

    criterion: Criterion
    status: str
    contrast: Contrast | None
    ratio: float | None  # mean(variant) / mean(baseline)
    text: str


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
        results.append(judge(c, a, b))
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
    if min(len(group.runs), len(baseline.runs)) < 2:
        failing = [r for r in have if r.status == INDICATIVE_NOT]
        point = ("point estimates meet every criterion with data" if not failing
                 else f"point estimates fail {names(failing)}")
        return Verdict(group, baseline, results, "single seed: indicative only",
                       f"one seed on one side, so no confidence interval; {point}", notes)
    failed = [r for r in have if r.status == NOT_MET]
    # indicative here: a metric that only one run of a side has, so it cannot be shown either
    open_ = [r for r in have if r.status in (NOT_SHOWN, INDICATIVE_MET, INDICATIVE_NOT)]
    if failed:
        overall, text = "fail", f"not met beyond the 95% CI: {names(failed)}"
        if open_:
            text += f"; not shown: {names(open_)}"
    elif open_:
        overall, text = "not shown", f"not shown beyond the 95% CI for: {names(open_)}"
    else:
        overall, text = "success", f"all {len(have)} criteria with data met beyond the 95% CI"
    return Verdict(group, baseline, results, overall, text, notes)


# ---- the comparison --------------------------------------------------------------------------
@dataclass
class Comparison:
    """Everything the tables and the report show."""

    runs: list[Run]
    groups: list[Group]
    verdicts: list[Verdict]
    notes: list[str]


def pick_baselines(groups: Sequence[Group], baseline_runs: Sequence[Run] | None) -> dict[str, Group]:
    """Baseline group per size: the groups holding `baseline_runs` when given, else the group of
    variant "baseline" without overrides of each size."""
    if baseline_runs:
        paths = {r.path.resolve() for r in baseline_runs}
        chosen = [g for g in groups if any(r.path.resolve() in paths for r in g.runs)]
        if len({g.size for g in chosen}) < len(chosen):
            raise DataError(f"--baseline holds runs of several variants of one size "
                            f"({', '.join(g.name for g in chosen)}); give the folder of one variant")
        if len(chosen) == 1:  # one baseline for every size
            return {g.size: chosen[0] for g in groups}
        return {g.size: g for g in chosen}
    return {g.size: g for g in groups if g.variant == "baseline" and not g.runs[0].overrides}


def compare(paths: Sequence[str | Path], baseline: str | Path | None = None) -> Comparison:
    """Read the runs under `paths` (and `baseline`), group them, and judge every group against
    its baseline. Raises DataError only for paths that do not exist or hold no run."""
    run_dirs = find_runs(paths)
    base_dirs = find_runs([baseline]) if baseline is not None else []
    for d in base_dirs:
        if d.resolve() not in {r.resolve() for r in run_dirs}:
            run_dirs.append(d)
    runs = [load_run(d) for d in run_dirs]
    groups = group_runs(runs)
    base_runs = [r for r in runs if r.path.resolve() in {d.resolve() for d in base_dirs}]
    baselines = pick_baselines(groups, base_runs or None)
    notes: list[str] = []
    verdicts = []
    for g in groups:
        b = baselines.get(g.size)
        if b is None:
            notes.append(f"{g.name}: no baseline of size {g.size} among the runs (pass --baseline RUN_DIR); "
                         f"no verdict")
        elif b is not g:
            verdicts.append(verdict(g, b))
    for g in groups:
        ta = g.values("tokens")
        if len(set(ta)) > 1:
            notes.append(f"{g.name}: its seeds trained on different token budgets {sorted(set(ta))}")
        for r in g.runs:
            notes += [f"{r.path}: {n}" for n in r.notes]
    return Comparison(runs, groups, verdicts, notes)


# ---- tables ----------------------------------------------------------------------------------
def task_lengths(groups: Sequence[Group]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Tasks, (task, OOD length) pairs and needle lengths present in any group, in natural order."""
    names = set().union(*(g.metric_names() for g in groups)) if groups else set()
    tasks = [k.split("/", 1)[1] for k in names if k.startswith("iid_em/")]
    order = {t: i for i, t in enumerate(next((list((r.results.get("algorithmic") or {}).get("tasks") or {})
                                              for g in groups for r in g.runs if r.results.get("algorithmic")), []))}
    tasks.sort(key=lambda t: (order.get(t, len(order)), t))
    ood = [tuple(k.split("/")[1:3]) for k in names if k.startswith("ood_em/")]
    ood.sort(key=lambda tl: (order.get(tl[0], len(order)), tl[0], float(tl[1])))
    needle = sorted({k.split("/")[1] for k in names if k.startswith("needle_acc/")}, key=float)
    return tasks, ood, needle  # type: ignore[return-value]


def csv_frame(comp: Comparison):
    """Machine-readable table: one row per group; every metric's mean and its 95% half-width
    (`<metric>_ci95`, empty for one seed); accuracies as fractions; verdict columns."""
    import pandas as pd

    verdicts = {id(v.group): v for v in comp.verdicts}
    rows = []
    for g in comp.groups:
        row: dict[str, Any] = {"size": g.size, "variant": g.variant, "label": g.label, "seed_count": len(g.runs),
                               "seeds": " ".join(str(s) for s in g.seeds)}
        v = verdicts.get(id(g))
        row["verdict"] = v.overall if v else ("baseline" if any(g is x.baseline for x in comp.verdicts) else "")
        for r in (v.results if v else []):
            row[f"criterion_{r.criterion.name}"] = r.status
        for metric in sorted(g.metric_names()):
            est = g.estimate(metric)
            row[metric] = est.mean
            row[f"{metric}_ci95"] = est.half_width
            if est.n != len(g.runs):
                row[f"{metric}_n"] = est.n
        rows.append(row)
    df = pd.DataFrame(rows)
    crit = [c for c in df.columns if c.startswith("criterion_")]
    return df[list(df.columns[:6]) + crit + [c for c in df.columns[6:] if c not in crit]]


def runs_frame(comp: Comparison):
    """One row per run with its raw metrics (for recomputing anything)."""
    import pandas as pd

    return pd.DataFrame([{"path": str(r.path), "size": r.size, "variant": r.label, "seed": r.seed, **m}
                         for g in comp.groups for r, m in zip(g.runs, g.metrics)])
