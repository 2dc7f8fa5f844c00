"""Figures of a training run: loss.png (train and validation loss vs tokens) and accuracy.png
(validation exact match per task vs tokens). Redrawn after every validation."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from unified.runlog import read_metrics  # noqa: E402


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
        ax.plot(train.tokens, train.loss, label="train loss", lw=1, alpha=0.8)
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
