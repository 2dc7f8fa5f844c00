"""The logs and the report of bench/peers.py: each side's training run read into a `RunLog`
(nanoGPT's stdout, this project's metrics.jsonl), time-to-loss, the ratio table, and the section
written into bench/RESULTS.md's hand-kept part. A helper module of bench/peers.py, not a command."""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
import sys
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unified.errors import ConfigError  # noqa: E402

SECTION = "## Peers side by side (`bench/peers.py`)"
MARKER = "<!-- hand-kept:"


_ITER = re.compile(r"^iter (\d+): loss [-\d.naif]+, time ([\d.]+)ms")
_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


@dataclass
class RunLog:
    """One training run of either side: per-step milliseconds (validation excluded), the
    validation losses by step, and the training time (s, validation excluded) at each step."""

    step_ms: list[float]
    val: list[tuple[int, float]] = field(default_factory=list)
    train_s_at: dict[int, float] = field(default_factory=dict)

    def median_ms(self) -> float:
        return statistics.median(self.step_ms)

    def final_val(self) -> float | None:
        return self.val[-1][1] if self.val else None


def parse_nanogpt_log(text: str, eval_interval: int) -> RunLog:
    """nanoGPT's stdout as a RunLog. An iteration at a multiple of `eval_interval` (and iteration
    0) also times its evaluation, so its step time is replaced by the median of the others."""
    times: dict[int, float] = {}
    val = []
    for line in text.splitlines():
        if m := _ITER.match(line):
            times[int(m[1])] = float(m[2])
        elif m := _EVAL.match(line):
            val.append((int(m[1]), float(m[3])))
    clean = [ms for i, ms in times.items() if i % eval_interval and i]
    if not clean:
        raise ConfigError("nanoGPT printed no iteration times; is --nanogpt a nanoGPT checkout?")
    med = statistics.median(clean)
    train_s_at, total = {}, 0.0
    for i in sorted(times):  # iteration i is the (i + 1)-th update; an eval at step s follows s updates
        total += (times[i] if i % eval_interval and i else med) / 1e3
        train_s_at[i + 1] = total
    return RunLog(clean, val, train_s_at)


def parse_metrics(path: Path) -> RunLog:
    """A run's metrics.jsonl as a RunLog: each train record's window (log_every steps) gives its
    ms per step (tokens_per_s, measured without validation); the first window (warm-up) is left out
    of `step_ms`, not of the training time."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        raise ConfigError(f"{path} holds no train records")
    step_ms, train_s_at, total, prev = [], {}, 0.0, 0
    per_step = train[0]["tokens"] / train[0]["step"]
    for r in train:
        ms = 1e3 * per_step / r["tokens_per_s"]
        total += ms * (r["step"] - prev) / 1e3
        prev = r["step"]
        train_s_at[r["step"]] = total
        step_ms.append(ms)
    val = [(r["step"], r["val_lang_loss"]) for r in records if r.get("kind") == "val" and "val_lang_loss" in r]
    return RunLog(step_ms[1:] or step_ms, val, train_s_at)


def time_to_loss(run: RunLog, target: float) -> tuple[int, float] | None:
    """(step, training seconds) of the first validation of `run` at or below `target`; None if never."""
    for step, loss in run.val:
        if loss <= target and step in run.train_s_at:
            return step, run.train_s_at[step]
    return None


def ratio_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of rows {peer, case, peer_ms, ours_ms, load} with the ratio peer / ours."""
    lines = ["| peer | case | peer ms/step | ours ms/step | peer / ours | load (1 min) |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['peer']} | {r['case']} | {r['peer_ms']:.1f} | {r['ours_ms']:.1f} | "
                     f"{r['peer_ms'] / r['ours_ms']:.2f}x | {r['load']} |")
    return "\n".join(lines)


def write_section(results: Path, body: str) -> None:
    """Put `body` under SECTION in the hand-kept part of `results` (after MARKER), replacing an
    earlier peers section and nothing else; appended at the end the first time."""
    text = results.read_text() if results.exists() else ""
    if MARKER not in text:
        raise ConfigError(f"{results} has no hand-kept part (a line starting {MARKER!r}); not written")
    block = f"{SECTION}\n\n{body.strip()}\n"
    start = text.find(SECTION, text.find(MARKER))
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + block + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    tmp = results.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(results)
