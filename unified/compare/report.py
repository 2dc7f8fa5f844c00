"""The comparison report: figures (`unified.compare.figures`), comparison.md / comparison.csv /
runs.csv and one self-contained report.html (figures embedded as base64 PNG).

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

from unified.compare.comparison import Comparison  # noqa: E402
from unified.compare.figures import FIGURES  # noqa: E402
from unified.compare.runs import companion  # noqa: E402
from unified.compare.samples import group_samples, samples_html, samples_markdown  # noqa: E402
from unified.compare.stats import CONFIDENCE, Estimate  # noqa: E402
from unified.compare.tables import csv_frame, runs_frame, task_lengths  # noqa: E402
from unified.compare.verdicts import CRITERIA, Group  # noqa: E402
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
    with `samples`, the "Samples" section (unified.compare.samples: loads each group's checkpoint)."""
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
