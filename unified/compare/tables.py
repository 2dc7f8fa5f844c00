"""Tables of a comparison: the machine-readable per-group and per-run frames (pandas) and the
natural order of the per-task / per-length cells the report shows."""
from __future__ import annotations

from typing import Any, Sequence

from unified.compare.comparison import Comparison
from unified.compare.runs import obj
from unified.compare.verdicts import Group


def _order_key(x: str) -> tuple[float, str]:
    """Numeric keys ("12", "0.5") in numeric order; anything else (a damaged file's key) after."""
    try:
        return float(x), x
    except ValueError:
        return float("inf"), x


def task_lengths(groups: Sequence[Group]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Tasks, (task, OOD length) pairs and needle lengths present in any group, in natural order."""
    names = set().union(*(g.metric_names() for g in groups)) if groups else set()
    tasks = [k.split("/", 1)[1] for k in names if k.startswith("iid_em/")]
    order = {t: i for i, t in enumerate(next((list(obj(obj(r.results.get("algorithmic")).get("tasks")))
                                              for g in groups for r in g.runs if r.results.get("algorithmic")), []))}
    tasks.sort(key=lambda t: (order.get(t, len(order)), t))
    ood = [tuple(k.split("/")[1:3]) for k in names if k.startswith("ood_em/")]
    ood.sort(key=lambda tl: (order.get(tl[0], len(order)), tl[0], _order_key(tl[1])))
    needle = sorted({k.split("/")[1] for k in names if k.startswith("needle_acc/")}, key=_order_key)
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
        for name, metric in (("iid", "iid_em"), ("ood", "ood_em")):
            flag = g.at_chance(metric)
            if flag is not None:
                row[f"at_chance_{name}"] = flag
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
