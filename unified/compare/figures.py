"""The comparison report's figures (matplotlib, Agg): loss vs tokens, per-task accuracy, OOD accuracy
vs length, needle heatmaps and accuracy vs FLOPs/token and state size. Each `plot_*` returns False
(and draws nothing) when the runs have no data for it; `FIGURES` is the list `write_report` draws.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unified.compare.comparison import Comparison  # noqa: E402
from unified.compare.tables import task_lengths  # noqa: E402
from unified.compare.verdicts import Group  # noqa: E402


def _colors(groups: list[Group]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {g.name: cmap(i % 10) for i, g in enumerate(groups)}


def plot_loss(comp: Comparison, path: Path) -> bool:
    """Training loss vs tokens for every run (one colour per group), validation loss as markers."""
    colors = _colors(comp.groups)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    drawn = False
    for g in comp.groups:
        for i, r in enumerate(g.runs):
            train = [(m["tokens"], m["loss"]) for m in r.metrics if m.get("kind") == "train"
                     and isinstance(m.get("loss"), (int, float)) and "tokens" in m]
            val = [(m["tokens"], m["val_loss"]) for m in r.metrics if m.get("kind") == "val"
                   and isinstance(m.get("val_loss"), (int, float)) and "tokens" in m]
            if train:
                ax.plot(*zip(*train), color=colors[g.name], lw=1, alpha=0.75, label=g.name if i == 0 else None)
                drawn = True
            if val:
                ax.plot(*zip(*val), "o", color=colors[g.name], ms=3, alpha=0.9)
    if drawn:
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats/token)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_title("training loss (lines, one per seed) and validation loss (dots)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _bar_groups(ax, labels: list[str], comp: Comparison, metric_of, colors) -> bool:
    """Grouped bars (percent) with 95% half-width error bars; returns whether anything was drawn."""
    n = len(comp.groups)
    width = 0.8 / max(1, n)
    x = np.arange(len(labels))
    drawn = False
    for i, g in enumerate(comp.groups):
        ests = [g.estimate(metric_of(lab)) for lab in labels]
        means = [100 * e.mean if e else np.nan for e in ests]
        errs = [100 * e.half_width if e and e.half_width else 0.0 for e in ests]
        if not all(np.isnan(means)):
            drawn = True
        ax.bar(x + (i - (n - 1) / 2) * width, means, width, yerr=errs, capsize=2, color=colors[g.name], label=g.name)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    return drawn


def plot_tasks(comp: Comparison, path: Path) -> bool:
    """Per-task IID exact match bars, one bar per group, 95% error bars."""
    tasks, _, _ = task_lengths(comp.groups)
    if not tasks:
        return False
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(tasks) + 2), 4.5))
    drawn = _bar_groups(ax, tasks, comp, lambda t: f"iid_em/{t}", _colors(comp.groups))
    ax.set_ylabel("IID exact match (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars: 10 groups cover them
    ax.set_title("algorithmic exact match per task (held-out IID prompts; bars: 95% CI over seeds)", wrap=True)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_ood(comp: Comparison, path: Path) -> bool:
    """OOD exact match vs length, one panel per task, one line per group (95% error bars)."""
    _, ood, _ = task_lengths(comp.groups)
    tasks = list(dict.fromkeys(t for t, _ in ood))
    if not tasks:
        return False
    colors = _colors(comp.groups)
    cols = min(5, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, task in zip(axes.flat, tasks):
        lengths = [n for t, n in ood if t == task]
        for g in comp.groups:
            ests = [g.estimate(f"ood_em/{task}/{n}") for n in lengths]
            pts = [(float(n), 100 * e.mean, 100 * (e.half_width or 0)) for n, e in zip(lengths, ests) if e]
            if pts:
                xs, ys, es = zip(*pts)
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, color=colors[g.name], label=g.name)
        ax.set_title(task, fontsize=9)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.set_xlabel("OOD length / size", fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes[0][0].set_ylabel("exact match (%)")
    fig.suptitle("out-of-distribution exact match vs length (beyond the training range)", fontsize=10, wrap=True)
    fig.tight_layout()
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.9))
    fig.savefig(path, dpi=100, bbox_inches="tight")  # holds the legend beside the panels
    plt.close(fig)
    return True


def plot_needle(comp: Comparison, path: Path) -> bool:
    """Needle accuracy heatmaps (depth x context length), one per group side by side, seed means."""
    groups = [g for g in comp.groups if any(k.startswith("needle/") for k in g.metric_names())]
    if not groups:
        return False
    cols = min(5, len(groups))  # rows of at most 5 heatmaps, so 10 groups stay legible
    rows = (len(groups) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1, 3.4 * rows), squeeze=False, layout="constrained")
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
    im = None
    for ax, g in zip(axes.flat, groups):
        keys = [k.split("/")[1:] for k in g.metric_names() if k.startswith("needle/")]
        lengths = sorted({n for n, _ in keys}, key=float)
        depths = sorted({d for _, d in keys}, key=float)
        grid = np.full((len(depths), len(lengths)), np.nan)
        for i, d in enumerate(depths):
            for j, n in enumerate(lengths):
                e = g.estimate(f"needle/{n}/{d}")
                if e:
                    grid[i, j] = e.mean
                    ax.text(j, i, f"{e.mean:.2f}", ha="center", va="center", fontsize=7)
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), lengths, fontsize=8)
        ax.set_yticks(range(len(depths)), depths, fontsize=8)
        ax.set_xlabel("context length")
        ax.set_title(f"{g.name} ({len(g.values('needle_acc'))} seeds)", fontsize=9)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("needle depth")
    fig.colorbar(im, ax=list(axes.flat), fraction=0.03)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_efficiency(comp: Comparison, path: Path) -> bool:
    """IID (filled) and OOD (hollow) exact match vs FLOPs/token and vs recurrent state size."""
    colors = _colors(comp.groups)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for ax, xmetric, xlabel in ((axes[0], "flops_per_token", "FLOPs per token"),
                                (axes[1], "state_size", "state size per sequence (at the training length)")):
        for g in comp.groups:
            x = g.estimate(xmetric)
            if x is None or x.mean <= 0:
                continue
            for metric, face in (("iid_em", colors[g.name]), ("ood_em", "none")):
                e = g.estimate(metric)
                if e is None:
                    continue
                ax.errorbar([x.mean], [100 * e.mean], yerr=[100 * (e.half_width or 0)], fmt="o", ms=7, capsize=3,
                            color=colors[g.name], mfc=face, label=g.name if metric == "iid_em" else None)
                drawn = True
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("exact match (%)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, title="filled IID, hollow OOD", title_fontsize=8)
    fig.suptitle("accuracy vs cost", fontsize=10)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


FIGURES = (("loss.png", "Loss vs tokens", plot_loss), ("tasks.png", "Per-task accuracy", plot_tasks),
           ("ood.png", "OOD accuracy vs length", plot_ood), ("needle.png", "Needle heatmaps", plot_needle),
           ("efficiency.png", "Accuracy vs FLOPs/token and state size", plot_efficiency))
