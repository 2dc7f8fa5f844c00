"""Needle-in-a-haystack suite (passkey retrieval, in the style of RULER's passkey task).

A five-digit code ("The secret code is 48213.") is hidden in a filler haystack of plain
sentences; the prompt ends with the question and the start of the answer ("What is the secret
code? The secret code is") and the model continues greedily. A sample is correct when the first
run of digits it produces is exactly the code.

The grid is context length x needle depth x samples. Every prompt of one length has exactly that
many tokens of the checkpoint's tokenizer (BOS included): prompts are assembled from separately
encoded pieces (filler sentences, needle, question) and the haystack is cut to fit, so each
length is one equal-length group for `unified.models.decoding.generate` (no padding, so recurrent
variants need no masks), prefilled along the prompts' prefix tree: the haystack of a sample up to
a needle is run once and shared by the deeper depths (`unified.models.shared_prefill`), so a
length costs about 3.5 instead of 5 prompt-lengths of prefill per sample at the default depths
(for variants whose forward is parallel over positions, on one CPU thread; see `generate`). The filler has no digits, so the code is the only number in the prompt.
Sample i of a length uses the same haystack and code at every depth (a paired design: depths
differ only in where the needle sits). By default the lengths are multiples of the checkpoint's
training sequence length (`length_factors`, 0.5x .. 8x), so both in-distribution retrieval and
extrapolation are measured; `context_lengths` sets absolute lengths instead (e.g. 1024, 2048,
4096). Each length is labelled `regime` "in_distribution" (at most the training length) or
"extrapolation" (`beyond_train_len`); a length is skipped only when the model cannot run it at
all (its own error or out of memory), and the reason is recorded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from unified.data.batches import stream_rng
from unified.data.scoring import mean_stderr
from unified.errors import ConfigError, UnifiedError
from unified.models import LanguageModel
from unified.models.decoding import DecodeSettings, generate
from unified.progress import progress
from unified.text.tokenizer import Tokenizer

NEEDLE_STREAM = 7  # seed-stream id of the needle suite (other suites use other ids)
CODE_DIGITS = 5

# Bland filler sentences, no digits (so the code is the only number in the prompt).
FILLER_SENTENCES: tuple[str, ...] = (
    "The grass is green and the sky is blue.",
    "A small boat drifted slowly along the quiet river.",
    "The children played in the park until the sun went down.",
    "Rain tapped gently on the window of the old house.",
    "The baker opened the shop early and the bread smelled warm.",
    "A cat slept on the porch while the wind moved the leaves.",
    "The road wound through the hills toward a distant town.",
    "Birds sang in the tall trees behind the garden wall.",
    "The teacher wrote a long sentence on the board.",
    "Clouds gathered over the sea and the waves grew larger.",
    "The farmer walked across the field to check the fence.",
    "A lamp glowed softly in the corner of the library.",
    "The train rolled past the station without stopping.",
    "Snow covered the mountain and the air was very still.",
    "The little dog chased its tail around the kitchen.",
    "A gentle breeze carried the smell of flowers across the yard.",
    "The market was busy with people buying fruit and cloth.",
    "She folded the letter and placed it inside a drawer.",
    "The river was wide and the water moved without a sound.",
    "An old clock ticked on the wall of the empty hall.",
    "The fisherman mended his nets on the sandy shore.",
    "Leaves turned gold and red as the days grew shorter.",
    "The moon rose above the village and the streets were quiet.",
    "He poured a cup of tea and looked out at the garden.",
)
NEEDLE_TEMPLATE = " The secret code is {code}. Remember it."
QUESTION = "\nWhat is the secret code? The secret code is"


@dataclass
class NeedleSettings:
    """Grid and decoding of the needle suite."""

    context_lengths: Sequence[int] | None = None  # absolute lengths; None: length_factors x train_len
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    samples: int = 5  # prompts per (length, depth) cell
    seed: int = 0
    batch_size: int = 64
    max_batch_tokens: int = 1 << 16  # prompt tokens per decoding batch (bounds activation memory)
    length_factors: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0)  # of train_len, when context_lengths is None
    train_len: int | None = None  # the checkpoint's training sequence length (default: the model's max_seq_len)

    def validate(self) -> None:
        """Reject impossible grids with one clear message."""
        if self.context_lengths is not None and (not self.context_lengths
                                                 or any(int(n) < 1 for n in self.context_lengths)):
            raise ConfigError(f"--needle_lengths must be positive integers, got {list(self.context_lengths)}")
        if not self.length_factors or any(not float(f) > 0 for f in self.length_factors):
            raise ConfigError(f"--needle_factors must be positive numbers, got {list(self.length_factors)}")
        if not self.depths or any(not 0.0 <= float(d) <= 1.0 for d in self.depths):
            raise ConfigError(f"--depths must be numbers in [0, 1], got {list(self.depths)}")
        if self.samples < 1:
            raise ConfigError(f"--needle_samples must be >= 1, got {self.samples}")

    def lengths(self, train_len: int) -> list[int]:
        """The context lengths evaluated: the absolute ones, else round(factor x train_len)."""
        if self.context_lengths is not None:
            return sorted({int(n) for n in self.context_lengths})
        return sorted({max(1, round(float(f) * train_len)) for f in self.length_factors})


@dataclass
class NeedlePrompt:
    """One prompt: its token ids (BOS first), the code, and where the needle sits."""

    ids: list[int]
    code: str
    length: int
    depth: float  # requested depth in [0, 1]
    needle_start: int  # token index of the needle within `ids`
    haystack_tokens: int  # filler tokens around the needle
    actual_depth: float  # (needle start within the haystack) / haystack_tokens


class NeedleBuilder:
    """Builds needle prompts of exact token lengths for one tokenizer (sentence encodings cached)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.sentences = [tokenizer.encode(" " + s) for s in FILLER_SENTENCES]  # leading space: BPE-friendly
        self.question = tokenizer.encode(QUESTION)

    def needle_ids(self, code: str) -> list[int]:
        """Token ids of the needle sentence carrying `code`."""
        return self.tok.encode(NEEDLE_TEMPLATE.format(code=code))

    def minimum_length(self) -> int:
        """Fewest tokens a prompt can have (BOS + needle + question, no filler)."""
        return 1 + len(self.needle_ids("9" * CODE_DIGITS)) + len(self.question)

    def sample(self, length: int, seed: int, index: int) -> tuple[str, list[int], list[int]]:
        """Code, haystack token ids and sentence start offsets of sample `index` at `length`.

        The haystack is a seeded sequence of filler sentences cut from the left to exactly the
        token budget left after BOS, needle and question."""
        rng = stream_rng(seed, NEEDLE_STREAM, length, index)
        code = str(rng.randint(10 ** (CODE_DIGITS - 1), 10 ** CODE_DIGITS - 1))
        budget = length - 1 - len(self.needle_ids(code)) - len(self.question)
        if budget < 0:
            raise ConfigError(f"needle context length {length} is too short; the smallest is {self.minimum_length()} "
                              f"tokens with this tokenizer")
        pieces: list[list[int]] = []
        total = 0
        while total < budget:
            s = self.sentences[rng.randrange(len(self.sentences))]
            pieces.append(s)
            total += len(s)
        starts, pos = [], 0
        for s in pieces:
            starts.append(pos)
            pos += len(s)
        cut = total - budget  # drop this many tokens from the left so the haystack fits exactly
        hay = [t for s in pieces for t in s][cut:]
        bounds = sorted({0, budget, *(p - cut for p in starts if p - cut >= 0)})
        return code, hay, bounds

    def build(self, length: int, depth: float, seed: int, index: int) -> NeedlePrompt:
        """The prompt of sample `index` at (`length`, `depth`): the needle goes at the sentence
        boundary of the haystack closest to depth x haystack tokens."""
        code, hay, bounds = self.sample(length, seed, index)
        target = depth * len(hay)
        at = min(bounds, key=lambda b: (abs(b - target), b))
        needle = self.needle_ids(code)
        ids = [self.tok.bos_id, *hay[:at], *needle, *hay[at:], *self.question]
        assert len(ids) == length, (len(ids), length)
        return NeedlePrompt(ids=ids, code=code, length=length, depth=float(depth), needle_start=1 + at,
                            haystack_tokens=len(hay), actual_depth=at / len(hay) if hay else float(depth))


def extract_code(text: str) -> str | None:
    """The first run of digits in a generated answer (None when it has none)."""
    m = re.search(r"\d+", text)
    return m.group(0) if m else None


def _cannot_run(exc: BaseException) -> bool:
    """True for errors meaning "this length cannot run on this model / machine" (not bugs)."""
    if isinstance(exc, (UnifiedError, MemoryError, torch.OutOfMemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def run_length(model: LanguageModel, tokenizer: Tokenizer, builder: NeedleBuilder, length: int,
               settings: NeedleSettings) -> list[dict[str, Any]]:
    """Decode every (depth, sample) prompt of one length; one row per prompt."""
    prompts = [builder.build(length, d, settings.seed, i) for d in settings.depths for i in range(settings.samples)]
    max_new = max(len(tokenizer.encode(" " + p.code)) for p in prompts) + 2
    vocab = model.cfg.vocab_size
    rows_per_batch = max(1, min(settings.batch_size, settings.max_batch_tokens // length,
                                (1 << 27) // (length * vocab)))  # prefill logits stay under 512 MiB
    gen = generate(model, [p.ids for p in prompts], tokenizer.eos_id, DecodeSettings(max_new_tokens=max_new),
                   batch_size=rows_per_batch, share_prefixes=True)  # each haystack prefix once across depths
    rows = []
    for p, toks, steps in zip(prompts, gen.tokens, gen.mean_steps):
        text = tokenizer.decode(toks)
        rows.append({"depth": p.depth, "actual_depth": p.actual_depth, "code": p.code, "prediction": text,
                     "correct": float(extract_code(text) == p.code), "steps": steps})
    return rows


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    acc, se = mean_stderr([r["correct"] for r in rows])
    out: dict[str, Any] = {"accuracy": acc, "accuracy_stderr": se, "n": len(rows)}
    steps = [r["steps"] for r in rows if r["steps"] is not None]
    if steps:
        out["mean_steps"] = sum(steps) / len(steps)
    return out


def run_needle(model: LanguageModel, tokenizer: Tokenizer, settings: NeedleSettings,
               plot_path: str | Path | None = None) -> dict[str, Any]:
    """The suite's payload: accuracy per (length, depth) cell, per length and overall, skipped
    lengths with reasons; also draws the depth x length heatmap at `plot_path`."""
    settings.validate()
    builder = NeedleBuilder(tokenizer)
    train_len = int(settings.train_len or model.cfg.max_seq_len)
    lengths = settings.lengths(train_len)
    depths = [float(d) for d in settings.depths]
    per_length: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    all_rows: list[dict[str, Any]] = []
    for length in progress(lengths, desc="needle lengths"):  # a bar on a terminal (unified.progress)
        if length < builder.minimum_length():
            skipped[str(length)] = (f"shorter than the smallest needle prompt ({builder.minimum_length()} tokens "
                                    f"with tokenizer {tokenizer.name!r})")
            continue
        try:
            rows = run_length(model, tokenizer, builder, length, settings)
        except Exception as exc:  # only "cannot run" errors are recorded; anything else is a bug
            if not _cannot_run(exc):
                raise
            first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            skipped[str(length)] = f"{type(exc).__name__}: {first_line}"
            continue
        cells = {}
        for d in depths:
            cell_rows = [r for r in rows if r["depth"] == d]
            cells[f"{d:g}"] = {**_summary(cell_rows),
                               "actual_depth": sum(r["actual_depth"] for r in cell_rows) / len(cell_rows)}
        per_length[str(length)] = {**_summary(rows), "beyond_train_len": length > train_len,
                                   "regime": "extrapolation" if length > train_len else "in_distribution",
                                   "length_factor": length / train_len, "depths": cells,
                                   "examples": [{k: r[k] for k in ("depth", "code", "prediction", "correct")}
                                                for r in rows[:: max(1, settings.samples)][:3]]}
        all_rows += rows
    overall = _summary(all_rows)
    within = [v for v in per_length.values() if not v["beyond_train_len"]]
    payload: dict[str, Any] = {
        "accuracy": overall["accuracy"], "accuracy_stderr": overall["accuracy_stderr"], "n": overall["n"],
        **({"mean_steps": overall["mean_steps"]} if "mean_steps" in overall else {}),
        "accuracy_within_train_len": (sum(v["accuracy"] * v["n"] for v in within) / sum(v["n"] for v in within)
                                      if within else None),
        "train_len": train_len, "lengths": per_length, "skipped_lengths": skipped,
        "grid": {"context_lengths": lengths, "relative": settings.context_lengths is None,
                 "length_factors": [float(f) for f in settings.length_factors] if settings.context_lengths is None
                 else None, "depths": depths, "samples": settings.samples,
                 "code_digits": CODE_DIGITS, "needle": NEEDLE_TEMPLATE, "question": QUESTION},
        "seed": settings.seed,
    }
    if plot_path is not None:
        plot_heatmap(payload, plot_path)
        payload["plot"] = Path(plot_path).name
    return payload


def plot_heatmap(payload: dict[str, Any], path: str | Path) -> None:
    """needle.png: accuracy per depth (rows) x context length (columns); skipped lengths grey,
    lengths beyond the training context marked with '*'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = payload["grid"]["context_lengths"]
    depths = payload["grid"]["depths"]
    grid = np.full((len(depths), len(lengths)), np.nan)
    for j, n in enumerate(lengths):
        entry = payload["lengths"].get(str(n))
        for i, d in enumerate(depths):
            if entry is not None:
                grid[i, j] = entry["depths"][f"{d:g}"]["accuracy"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 1.1 * len(lengths)), 1.2 + 0.55 * len(depths)))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(depths)):
        for j in range(len(lengths)):
            label = "skip" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
            ax.text(j, i, label, ha="center", va="center", fontsize=8)
    train_len = payload["train_len"]
    ax.set_xticks(range(len(lengths)), [f"{n}{'*' if n > train_len else ''}" for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel(f"context length in tokens (* = beyond training length {train_len})", fontsize=9)
    ax.set_ylabel("needle depth")
    ax.set_title(f"needle accuracy (overall {payload['accuracy']:.2f})" if payload["n"] else "needle accuracy")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
