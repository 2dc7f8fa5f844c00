"""Figures of a training run: loss.png (train and validation loss vs tokens) and accuracy.png
(validation exact match per task vs tokens), redrawn after every validation, and curriculum.png
(the per-task curriculum's levels, competence and sampling weights) with --use_task_curriculum."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from unified.train.runlog import read_metrics


def train_cross_entropy(train: pd.DataFrame) -> pd.Series:
    """The train records' cross-entropy, comparable with the validation curves: `ce_loss` (the logged
    `loss` adds a variant's auxiliary term, e.g. ACT's ponder cost); runs logged before it existed: `loss`."""
    if "ce_loss" in train and train.ce_loss.notna().all():
        return train.ce_loss
    return train.loss


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write loss.png and accuracy.png of a run folder from its metrics.jsonl; returns the paths."""
    run_dir = Path(run_dir)
    df = pd.DataFrame(read_metrics(run_dir / "metrics.jsonl"))
    if df.empty or "kind" not in df:
        return []
    train, val = df[df.kind == "train"], df[df.kind == "val"]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if not train.empty:
        ax.plot(train.tokens, train_cross_entropy(train), label="train loss (cross-entropy)", lw=1, alpha=0.8)
    for col, label in (("val_loss", "validation loss"), ("val_lang_loss", "validation loss (language)")):
        if col in val and val[col].notna().any():
            ax.plot(val.tokens, val[col], "o-", label=label, ms=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(f"{run_dir.name}: loss")
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=110)
    plt.close(fig)
    written.append(run_dir / "loss.png")

    cols = sorted(c for c in val.columns if c.startswith("val_em/"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in cols:
        ax.plot(val.tokens, val[c], "o-", ms=3, label=c.split("/", 1)[1])
    if "val_exact_match" in val:
        ax.plot(val.tokens, val.val_exact_match, "k-", lw=2.5, label="mean")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("validation exact match")
    ax.grid(alpha=0.3)
    if cols:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{run_dir.name}: algorithmic accuracy (held-out validation prompts)")
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy.png", dpi=110)
    plt.close(fig)
    written.append(run_dir / "accuracy.png")
    return written


def plot_curriculum(run_dir: str | Path) -> Path | None:
    """curriculum.png of a run: level (fraction of the train range), competence EMA and sampling
    weight per task against tokens, with unlock/raise/lower decisions marked."""
    run_dir = Path(run_dir)
    recs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "curriculum"]
    snaps = pd.DataFrame([r for r in recs if r.get("action") == "state"])
    if snaps.empty:
        return None
    events = [r for r in recs if r.get("action") != "state"]
    names = [c.split("/", 1)[1] for c in snaps.columns if c.startswith("level_frac/")]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for n in names:
        axes[0].step(snaps.tokens, snaps[f"level_frac/{n}"], where="post", color=colors[n], label=n)
        axes[1].plot(snaps.tokens, pd.to_numeric(snaps[f"ema/{n}"], errors="coerce"), "o-", ms=2, color=colors[n])
    axes[2].stackplot(snaps.tokens, *[snaps[f"weight/{n}"] for n in names], colors=[colors[n] for n in names])
    marks = {"raise": "^", "lower": "v", "unlock": "*", "mastered": "s", "forgotten": "x"}
    for e in events:
        if e.get("task") in colors:
            y = snaps[f"level_frac/{e['task']}"][snaps.step <= e["step"]]
            axes[0].plot(e["tokens"], y.iloc[-1] if len(y) else 0, marks.get(e["action"], "o"),
                         color=colors[e["task"]], mec="k", mew=0.6, ms=8 if e["action"] == "unlock" else 6, zorder=3)
    axes[0].set_ylabel("difficulty level\n(fraction of train range)")
    axes[1].set_ylabel("competence (EMA of\nvalidation exact match)")
    axes[1].set_ylim(-0.02, 1.02)
    axes[2].set_ylabel("sampling weight")
    axes[2].set_xlabel("tokens seen")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=5, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False)
    fig.suptitle(f"{run_dir.name}: task curriculum ({recs[0].get('strategy', '')}; "
                 f"^ raise, v lower, * unlock, s mastered, x forgotten)")
    fig.tight_layout()
    path = run_dir / "curriculum.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
