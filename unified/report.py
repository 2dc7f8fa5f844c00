"""The comparison report: figures (matplotlib, Agg), comparison.md / comparison.csv / runs.csv and
one self-contained report.html (figures embedded as base64 PNG).

`write_report(comparison, out_dir)` draws what the runs have data for; a figure without data is
skipped with a note in the report rather than drawn empty.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from unified.compare import CONFIDENCE, CRITERIA, Comparison, Estimate, Group  # noqa: E402
from unified.compare_runs import companion  # noqa: E402
from unified.compare_tables import csv_frame, runs_frame, task_lengths  # noqa: E402
from unified.progress import progress  # noqa: E402

STATS_TEXT = (
    f"Runs of the same size, variant and model overrides are grouped over seeds. Each cell is the mean over seeds "
    f"± the half-width of its {CONFIDENCE:.0%} t-interval (t(0.975, n-1) · s/√n); no ± means one seed (or no spread). "
    f"A criterion is the contrast c = mean(variant) − k·mean(baseline) − δ with a Welch {CONFIDENCE:.0%} interval "
    f"(unequal variances, Welch–Satterthwaite df). It is **met** only when the whole interval lies on the success "
    f"side, **not met** when the whole interval lies on the failing side, and **not shown** when the interval "
    f"straddles the threshold. With one seed on either side there is no interval: outcomes are *indicative* and "
    f"the verdict is \"single seed: indicative only\". Training time is wall-clock seconds per training token "
    f"(summary.json wall_time_s / tokens, validation and checkpointing included), so it is comparable at "
    f"different budgets but noisy on shared machines. Exact matches show their chance floor (the exact match of "
    f"the best constant answer of each cell) and *at chance* when the group's interval (seeds' t-interval or "
    f"mean − 1.96 × the runs' own standard errors, whichever is lower) reaches it; an accuracy criterion "
    f"between two groups that are both at chance is \"both at chance\", never met. Results evaluated with "
    f"non-default options (`results_<suite>@<tag>.json`) are separate groups labelled `@<tag>`, judged against "
    f"a baseline evaluated the same way (model-only options such as `@K=8`: the as-trained baseline); results "
    f"of another grid or harness version are separate groups labelled `{{grid G, harness H}}`, never averaged.")


# (metric, column header, format) of the main table; formats: int, pct, float, sec.
MAIN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("trainable_params", "trainable params", "int"), ("frozen_params", "frozen params", "int"),
    ("flops_per_token", "FLOPs/token", "int"), ("state_size", "state size", "int"),
    ("tokens", "train tokens", "int"), ("wall_time_s", "train time (s)", "float"), ("tokens_per_s", "tokens/s", "float"),
    ("final_loss", "final train loss", "float"), ("iid_em", "IID EM %", "pct"), ("ood_em", "OOD EM %", "pct"),
    ("needle_acc", "needle acc %", "pct"), ("token_perplexity", "perplexity", "float"),
    ("bits_per_byte", "bits/byte", "float"), ("val_lang_bpb", "val bits/byte (training)", "float"),
    ("mean_steps", "ACT mean steps", "float"), ("mean_steps_answer", "ACT mean steps (answers)", "float"),
)


def fmt(est: Estimate | None, kind: str = "float", of: int | None = None) -> str:
    """A group estimate as text: mean, +- the 95% half-width when there is an interval, and
    "(n=k)" when only k of the group's `of` runs have the metric (accuracies in percent; "-"
    when absent)."""
    if est is None:
        return "-"
    scale = 100.0 if kind == "pct" else 1.0

    def one(x: float) -> str:
        x *= scale
        if kind == "int":
            return f"{x:,.0f}"
        if kind == "pct":
            return f"{x:.1f}"
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"

    text = one(est.mean)
    if est.half_width is not None and est.half_width > 0:
        text += f" ± {one(est.half_width)}"
    if of is not None and est.n < of:
        text += f" (n={est.n})"
    return text


def with_floor(g: Group, metric: str, kind: str = "pct") -> str:
    """`fmt` of an exact-match metric followed by its chance floor, "(floor 30.0)", and
    "at chance" when the group's interval reaches the floor (`Group.at_chance`)."""
    text = fmt(g.estimate(metric), kind, len(g.runs))
    floor = g.floor(metric) if metric.startswith(("iid_em", "ood_em")) else None
    if floor is None or text == "-":
        return text
    text += f" (floor {floor * 100:.1f})"
    if g.at_chance(metric):
        text += " at chance"
    return text


def main_table(comp: Comparison):
    """Display table (pandas): one row per group with mean +- 95% half-width per column; exact
    matches with their chance floor."""
    import pandas as pd

    rows = []
    for g in comp.groups:
        row = {"group": g.name, "variant": g.label, "size": g.size, "seeds": len(g.runs)}
        for metric, header, kind in MAIN_COLUMNS:
            row[header] = with_floor(g, metric, kind)
        rows.append(row)
    df = pd.DataFrame(rows)
    keep = [c for c in df.columns if c in ("group", "variant", "size", "seeds") or (df[c] != "-").any()]
    return df[keep]


def breakdown_tables(comp: Comparison) -> dict[str, Any]:
    """Per-task IID exact match, OOD exact match per (task, length) and needle accuracy per
    length: rows = cells, columns = groups (percent, mean +- 95% half-width, with the cell's
    chance floor and n_distinct)."""
    import pandas as pd

    tasks, ood, needle = task_lengths(comp.groups)
    out = {}
    specs = (("IID exact match % per task", [(t, f"iid_em/{t}") for t in tasks], "task"),
             ("OOD exact match % per length", [(f"{t} @ {n}", f"ood_em/{t}/{n}") for t, n in ood], "task @ length"),
             ("needle accuracy % per context length", [(n, f"needle_acc/{n}") for n in needle], "length"))
    for title, cells, index in specs:
        if cells:
            out[title] = pd.DataFrame({g.name: [_cell(g, m) for _, m in cells] for g in comp.groups},
                                      index=pd.Index([c for c, _ in cells], name=index))
    lm_eval = sorted({m for g in comp.groups for m in g.metric_names() if m.startswith("lm_eval/")})
    if lm_eval:  # lm-evaluation-harness results (RUN/lm_eval/, unified.evals.lm_eval.adapter), as lm-eval reports them
        out["lm-eval metrics"] = pd.DataFrame({g.name: [fmt(g.estimate(m), "float", len(g.runs)) for m in lm_eval]
                                               for g in comp.groups},
                                              index=pd.Index([m.split("/", 1)[1] for m in lm_eval], name="task/metric"))
    return out


def _cell(g: Group, metric: str) -> str:
    text = with_floor(g, metric)
    n = g.values(companion(metric, "n"))
    if n and text != "-":
        text += f" n={min(n):.0f}" if min(n) == max(n) else f" n={min(n):.0f}..{max(n):.0f}"
    return text


def verdict_table(comp: Comparison):
    """One row per judged group: each criterion's status and numbers, and the overall verdict."""
    import pandas as pd

    rows = []
    for v in comp.verdicts:
        row = {"variant": v.group.name, "baseline": v.baseline.name,
               "seeds": f"{len(v.group.runs)} vs {len(v.baseline.runs)}"}
        for r in v.results:
            row[r.criterion.name] = f"{r.status}: {r.text}"
        row["verdict"] = f"{v.overall} ({v.text})"
        rows.append(row)
    return pd.DataFrame(rows)


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


def criteria_lines() -> list[str]:
    """The success criteria, one line each, with their contrast."""
    out = []
    for c in CRITERIA:
        side = (">" if c.strict else ">=") if c.higher else "<="
        k = "" if c.k == 1.0 else f"{c.k:g}·"
        out.append(f"{c.name}: {c.description} — c = {c.metric}(variant) − {k}{c.metric}(baseline)"
                   f"{f' − {c.delta:g}' if c.delta else ''} {side} 0"
                   f"{f' (falls back to {c.fallback} when the suite is absent)' if c.fallback else ''}")
    return out


def write_report(comp: Comparison, out_dir: str | Path, samples: bool = True) -> dict[str, Path]:
    """Write comparison.csv, runs.csv, comparison.md, report.html and the figures into `out_dir`;
    with `samples`, the "Samples" section (unified.report_samples: loads each group's checkpoint)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    csv_frame(comp).to_csv(out / "comparison.csv", index=False)
    runs_frame(comp).to_csv(out / "runs.csv", index=False)
    written["comparison.csv"], written["runs.csv"] = out / "comparison.csv", out / "runs.csv"
    notes = list(comp.notes)
    figures = []
    for name, title, fn in progress(FIGURES, desc="figures"):
        try:
            ok = fn(comp, out / name)
        except Exception as exc:  # a figure must never sink the tables; say what went wrong
            plt.close("all")
            notes.append(f"figure {name} failed: {type(exc).__name__}: {exc}")
            continue
        if ok:
            figures.append((name, title))
            written[name] = out / name
        else:
            notes.append(f"figure {name} skipped: no data for it in these runs")
    main, parts, verdicts = main_table(comp), breakdown_tables(comp), verdict_table(comp)
    from unified.report_samples import group_samples, samples_html, samples_markdown

    rows = group_samples(comp.groups) if samples else []
    if samples and not any(r.texts for r in rows):
        notes.append("samples skipped: no group has a loadable best_model.pt")
    md = _markdown(comp, main, parts, verdicts, figures, notes, samples_markdown(rows))
    (out / "comparison.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(_html(comp, main, parts, verdicts, figures, notes, out, samples_html(rows)),
                                     encoding="utf-8")
    written["comparison.md"], written["report.html"] = out / "comparison.md", out / "report.html"
    return written


def _verdict_lines(comp: Comparison) -> list[str]:
    lines = []
    for v in comp.verdicts:
        lines.append(f"**{v.group.name}** vs {v.baseline.name} ({len(v.group.runs)} vs {len(v.baseline.runs)} "
                     f"seeds): **{v.overall}** — {v.text}")
        lines += [f"  - {r.criterion.name}: {r.status} — {r.text}" for r in v.results]
        lines += [f"  - note: {n}" for n in v.notes]
    return lines


def _markdown(comp: Comparison, main, parts: dict[str, Any], verdicts, figures, notes, samples=()) -> str:
    lines = [f"# Comparison of {len(comp.runs)} runs in {len(comp.groups)} groups",
             f"_written {time.strftime('%Y-%m-%d %H:%M')}_", "", "## Verdicts", ""]
    lines += _verdict_lines(comp) or ["No verdicts (no baseline group, or only the baseline)."]
    lines += ["", "Criteria:", ""] + [f"- {c}" for c in criteria_lines()] + ["", STATS_TEXT, ""]
    lines += ["## Summary", "", main.to_markdown(index=False, disable_numparse=True), ""]
    for title, df in parts.items():
        lines += [f"## {title}", "", df.to_markdown(disable_numparse=True), ""]
    lines += list(samples)
    if figures:
        lines += ["## Figures", ""] + [f"![{t}]({n})" for n, t in figures] + [""]
    lines += ["## Notes", ""] + ([f"- {n}" for n in notes] or ["- none"]) + [""]
    return "\n".join(lines)


def _html(comp: Comparison, main, parts: dict[str, Any], verdicts, figures, notes, out: Path, samples: str = "") -> str:
    esc = html.escape
    body = [f"<h1>Comparison of {len(comp.runs)} runs in {len(comp.groups)} groups</h1>",
            f"<p><i>written {esc(time.strftime('%Y-%m-%d %H:%M'))}</i></p>", "<h2>Verdicts</h2>"]
    if len(verdicts):
        body.append(verdicts.to_html(index=False, escape=True, classes="t"))
        body.append("<ul>" + "".join(f"<li>note ({esc(v.group.name)}): {esc(n)}</li>"
                                     for v in comp.verdicts for n in v.notes) + "</ul>")
    else:
        body.append("<p>No verdicts (no baseline group, or only the baseline).</p>")
    body.append("<h3>Criteria</h3><ul>" + "".join(f"<li>{esc(c)}</li>" for c in criteria_lines()) + "</ul>")
    body.append(f"<p>{esc(STATS_TEXT).replace('**', '')}</p>")
    body += ["<h2>Summary</h2>", main.to_html(index=False, escape=True, classes="t")]
    for title, df in parts.items():
        body += [f"<h2>{esc(title)}</h2>", df.to_html(escape=True, classes="t")]
    body.append(samples)
    for name, title in figures:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        body += [f"<h2>{esc(title)}</h2>", f'<img alt="{esc(title)}" src="data:image/png;base64,{data}">']
    body += ["<h2>Notes</h2><ul>", *(f"<li>{esc(n)}</li>" for n in notes or ["none"]), "</ul>"]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table.t{border-collapse:collapse;"
             "font-size:13px} .t td,.t th{border:1px solid #ccc;padding:3px 6px} img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>comparison</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")
