"""The figure of a preset's reproduction (matplotlib, Agg), by the preset's `figure.kind`:

- "ood": exact match vs length, IID cell then each OOD length of `figure.task`, one line per row
  (error bars: 95% half-width over seeds), the chance floor dashed;
- "state": exact match vs recurrent state size (log x), one line per (variant, difficulty) over
  the rows of that variant (zoology's Figure 2 shape), for `figure.task`'s training difficulties;
- "criteria": each criterion cell's measured value with its interval beside its threshold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from unified.compare.verdicts import Group  # noqa: E402


def _mean_hw(g: Group, metric: str) -> tuple[float | None, float]:
    e = g.estimate(metric)
    if e is None:
        return None, 0.0
    return e.mean, e.half_width or 0.0


def _ood(ax, preset, groups: dict[str, Group], task: str) -> bool:
    cells = sorted({m.split("/")[2] for g in groups.values() for m in g.metric_names()
                    if m.startswith(f"ood_em/{task}/")}, key=float)
    metrics = [f"iid_em/{task}", *(f"ood_em/{task}/{c}" for c in cells)]
    labels = ["IID (train range)", *cells]
    drawn = False
    for row in preset.rows:
        g = groups[row.name]
        pts = [(i, *_mean_hw(g, m)) for i, m in enumerate(metrics)]
        pts = [(i, m, h) for i, m, h in pts if m is not None]
        if pts:
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                        marker="o", capsize=3, label=row.name)
            drawn = True
    floors = [next((g.floor(m) for g in groups.values() if g.floor(m) is not None), None) for m in metrics]
    if any(f is not None for f in floors):
        ax.plot([i for i, f in enumerate(floors) if f is not None], [100 * f for f in floors if f is not None],
                "k--", lw=1, label="chance floor")
    ax.set_xticks(range(len(metrics)), labels)
    ax.set_xlabel(f"{task}: evaluation cell (OOD difficulty)")
    ax.set_ylabel("exact match %")
    ax.set_ylim(-3, 103)
    return drawn


def _state(ax, preset, groups: dict[str, Group], task: str) -> bool:
    diffs = sorted({m.split("/")[2] for g in groups.values() for m in g.metric_names()
                    if m.startswith(f"iid_em/{task}/d")}, key=lambda d: int(d[1:]))
    wanted = preset.figure.get("difficulties")
    if wanted:
        diffs = [d for d in diffs if int(d[1:]) in set(wanted)]
    drawn = False
    variants = list(dict.fromkeys(r.variant for r in preset.rows))
    for v in variants:
        rows = [r for r in preset.rows if r.variant == v]
        for d in diffs:
            pts = []
            for r in rows:
                g = groups[r.name]
                x, (y, h) = g.estimate("state_size"), _mean_hw(g, f"iid_em/{task}/{d}")
                if x is not None and y is not None:
                    pts.append((x.mean, 100 * y, 100 * h))
            if pts:
                pts.sort()
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                            capsize=3, label=f"{v}, {d[1:]} pairs")
                drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("recurrent state size (floats per sequence at the training length)")
    ax.set_ylabel(f"{task} exact match %")
    ax.set_ylim(-3, 103)
    return drawn


def _criteria(ax, outcomes: Sequence[Any]) -> bool:
    items = [(f"{o.criterion.row}: {c.metric}", c, o.criterion) for o in outcomes for c in o.cells if c.mean is not None]
    if not items:
        return False
    for i, (label, c, crit) in enumerate(items):
        lo = min(c.mean, c.low if c.low is not None else c.mean)
        hi = max(c.mean, c.high if c.high is not None else c.mean)
        ax.errorbar([c.mean], [i], xerr=[[c.mean - lo], [hi - c.mean]], fmt="o", capsize=3, color="C0")
        if crit.value is not None:
            ax.plot([crit.value], [i], "r|", ms=14)
        if c.floor is not None and crit.value is not None:
            ax.plot([c.floor], [i], "kx", ms=6)
    ax.set_yticks(range(len(items)), [x[0] for x in items], fontsize=7)
    ax.set_xlabel("measured (dot, interval) vs threshold (red bar; contrasts: vs 0); chance floor x")
    return True


def draw_figure(preset, groups: dict[str, Group], outcomes: Sequence[Any], path: Path) -> Path | None:
    """Draw the preset's figure into `path`; None (nothing written) when there is no data."""
    kind = preset.figure.get("kind", "criteria")
    task = preset.figure.get("task", "")
    tasks = list(task) if isinstance(task, list) else [task]
    panels = len(tasks) if kind in ("ood", "state") else 1
    fig, axes = plt.subplots(1, panels, figsize=(max(8, 4.5 * panels), 4.8), squeeze=False)
    drawn = False
    for ax, t in zip(axes[0], tasks):
        if kind == "ood":
            drawn |= _ood(ax, preset, groups, t)
        elif kind == "state":
            drawn |= _state(ax, preset, groups, t)
        else:
            drawn |= _criteria(ax, outcomes)
        ax.grid(alpha=0.3)
        if kind != "criteria":
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(f"{preset.name}: {preset.title}"[:110], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
