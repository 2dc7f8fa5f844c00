"""The comparison report's "Samples" section: the same fixed prompts for every group, side by side.

Success criterion 4 of the ladder is "no perplexity collapse (still generates coherent text)";
bits per byte measures the first half, these samples let a reader see the second. Two prompts:
a language one (`LANGUAGE_PROMPT`) and an algorithmic one (a fixed held-out `eval` prompt of the
addition task, so it was never trained on). Each group's sample comes from its first seed's
best_model.pt, decoded greedily through the variant's cache (deterministic: the same runs give
the same report). A run whose checkpoint cannot be loaded gets a note instead of a sample.
"""
from __future__ import annotations

import html
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from unified.errors import UnifiedError
from unified.progress import progress

LANGUAGE_PROMPT = "Once upon a time"
LANGUAGE_TOKENS, ALGORITHMIC_TOKENS = 64, 12


def algorithmic_prompt() -> str:
    """A fixed held-out (eval split) addition prompt with 3-digit operands."""
    from unified.data.batches import sample_split
    from unified.data.tasks import get_task

    ex = sample_split(get_task("addition"), random.Random(0), "eval", 3)
    return ex.prompt if ex is not None else "add 123+456="


@dataclass
class SampleRow:
    """One group's greedy continuation of each prompt (prompt -> text), or why there is none."""

    group: str
    checkpoint: str | None
    texts: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def report_prompts() -> list[tuple[str, int]]:
    """(prompt, new tokens) of the section: the language prompt, then the algorithmic one."""
    return [(LANGUAGE_PROMPT, LANGUAGE_TOKENS), (algorithmic_prompt(), ALGORITHMIC_TOKENS)]


def group_samples(groups: Sequence[Any], prompts: Sequence[tuple[str, int]] | None = None,
                  device: str = "cpu") -> list[SampleRow]:
    """Greedy samples of every group (its first run with a best_model.pt) for each prompt (with
    a progress bar, `unified.progress`)."""
    from unified.models.decoding import DecodeSettings
    from unified.evals.hub import load_for_eval
    from unified.evals.sample_text import encode_prompt, stream_sample

    prompts = list(prompts or report_prompts())
    rows = []
    for g in progress(groups, desc="samples"):
        ckpt = next((Path(r.path) / "best_model.pt" for r in g.runs if (Path(r.path) / "best_model.pt").is_file()), None)
        if ckpt is None:
            rows.append(SampleRow(g.name, None, note="no best_model.pt"))
            continue
        try:
            ctx = load_for_eval(ckpt, device=device)
            texts = {p: stream_sample(ctx.model, ctx.tokenizer, encode_prompt(p, ctx.tokenizer),
                                      DecodeSettings(max_new_tokens=n)).text for p, n in prompts}
        except (UnifiedError, RuntimeError) as exc:  # a broken checkpoint costs its sample, not the report
            rows.append(SampleRow(g.name, str(ckpt), note=f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        rows.append(SampleRow(g.name, str(ckpt), texts))
    return rows


def _cell(text: str) -> str:
    """A sample as one markdown table cell (pipes escaped, newlines shown as ⏎)."""
    return "`" + text.replace("`", "'").replace("|", "\\|").replace("\r", "").replace("\n", "⏎") + "`"


def samples_markdown(rows: Sequence[SampleRow], prompts: Sequence[tuple[str, int]] | None = None) -> list[str]:
    """The section as markdown lines: one row per group, one column per prompt."""
    prompts = list(prompts or report_prompts())
    if not any(r.texts for r in rows):
        return []
    lines = ["## Samples", "", "Greedy continuations (first seed's best_model.pt, through the cache) of the same "
             "prompts; ⏎ marks a newline.", "",
             "| group | " + " | ".join(_cell(p) + f" (+{n} tokens)" for p, n in prompts) + " |",
             "|---|" + "---|" * len(prompts)]
    for r in rows:
        cells = [_cell(r.texts[p]) if p in r.texts else f"({r.note})" for p, _ in prompts]
        lines.append(f"| {r.group} | " + " | ".join(cells) + " |")
    return lines + [""]


def samples_html(rows: Sequence[SampleRow], prompts: Sequence[tuple[str, int]] | None = None) -> str:
    """The section as an HTML table (texts in <pre>, escaped)."""
    prompts = list(prompts or report_prompts())
    if not any(r.texts for r in rows):
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(p)} (+{n} tokens)</th>" for p, n in prompts)
    body = "".join(
        f"<tr><td>{esc(r.group)}</td>" + "".join(
            f"<td><pre style='white-space:pre-wrap;margin:0'>{esc(r.texts[p])}</pre></td>" if p in r.texts
            else f"<td>({esc(r.note or '')})</td>" for p, _ in prompts) + "</tr>" for r in rows)
    return (f"<h2>Samples</h2><p>Greedy continuations (first seed's best_model.pt, through the cache) of the "
            f"same prompts.</p><table class='t'><tr><th>group</th>{head}</tr>{body}</table>")
