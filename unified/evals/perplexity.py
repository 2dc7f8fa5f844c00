"""Perplexity suite: token perplexity, bits per byte and word perplexity on held-out text.

Text source, in order of precedence: `--text_file PATH` (the whole file; documents separated by
`<|endoftext|>` lines as in training data), `--ppl_dataset NAME` (the validation documents of an
HF dataset named as for `--lang_dataset`: tinystories, wikitext103, hf:<repo>[:<config>] ...;
needs the network or the HF cache), or by default the validation split of the language data the
run trained with (the source training resolved, split exactly as training split it, so training
never read it).

Scoring follows lm-eval's rolling log-likelihood: the token stream (documents separated by EOS)
is cut into disjoint windows of the model's context length C; each window is fed as
[BOS, t_0 .. t_{C-2}] and predicts [t_0 .. t_{C-1}], so every token is scored exactly once and the
first token of each window is conditioned on BOS only (`--ppl_prefix eos` conditions it on EOS
instead, the token that precedes every document in packed training text; the harness's training
puts BOS only before algorithmic prompts). EOS separators are context but not scored,
because the byte and word counts cover document text only (for the byte tokenizer tokens then
equal bytes, and bits per byte = log2 of token perplexity). Metrics (lm-eval conventions):
    token_perplexity = exp(NLL / tokens)      bits_per_byte = NLL / (bytes * ln 2)
    word_perplexity  = exp(NLL / words)       words = len(re.split(r"\\s+", doc)) per document
Standard errors come from the spread over windows: the per-token NLL is a ratio estimator
(sum of window NLLs / sum of window tokens) whose standard error is propagated to each metric by
the delta method.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unified.data.scoring import ratio_stderr
from unified.errors import ConfigError, DataError, UnknownNameError
from unified.models import LanguageModel
from unified.text.corpus import corpus_from_path, is_hub_spec, load_corpus
from unified.text.documents import DOC_SEPARATOR
from unified.text.textcache import HUB_SOURCES, hub_documents, hub_has_validation, hub_offline, resolve_hub
from unified.text.tokenizer import Tokenizer

# Tokens per forward on CPU: a micro model scored 256-token windows in ~86 us of CPU time per
# token at 4 - 16 rows per batch and 125 - 160 us at 32 - 64 rows (activations outgrow the caches;
# issue 20), so CPU batches stop at this many tokens whatever --batch_size allows (not for
# variants whose forward loops over positions, `LanguageModel.parallel_in_time`: their cost follows the loop).
CPU_FORWARD_TOKENS = 4096
STDERR_METHOD = "over windows: ratio-estimator standard error of NLL per token, delta method per metric"


@dataclass
class PerplexitySettings:
    """Where the text comes from and how much of it is scored."""

    text_file: str | None = None
    dataset: str | None = None  # an HF source as for --lang_dataset: tinystories, wikitext103, hf:<repo>[:<config>]
    max_tokens: int | None = 1 << 17  # score at most this many tokens (None = all)
    batch_size: int = 64
    max_batch_logits: int = 1 << 26  # batch rows x context x vocab floats of logits at once (256 MiB)
    prefix: str = "bos"  # token each window is conditioned on: "bos" or "eos"

    def validate(self) -> None:
        """Reject impossible values with one clear message."""
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"--ppl_max_tokens must be >= 1, got {self.max_tokens}")
        if self.text_file and self.dataset:
            raise ConfigError("give either --text_file or --ppl_dataset, not both")
        if self.prefix not in ("bos", "eos"):
            raise ConfigError(f"--ppl_prefix must be bos or eos, got {self.prefix!r}")


@dataclass
class HeldOutText:
    """A token stream to score (documents separated by EOS) with its byte and word counts."""

    name: str
    kind: str  # "text_file" | "dataset" | "run_validation"
    ids: np.ndarray
    bytes: int
    words: int
    documents: int
    truncated: bool = False
    entropy_bits_per_byte: float | None = None  # the source's true entropy rate when known (procedural)


def count_words(doc: str) -> int:
    """Words of a document as lm-eval counts them for word perplexity."""
    return len(re.split(r"\s+", doc))


def from_documents(name: str, kind: str, docs: Sequence[str], tokenizer: Tokenizer) -> HeldOutText:
    """Tokenize documents into one EOS-separated stream with their byte and word counts."""
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer.encode(d))
        ids.append(tokenizer.eos_id)
    return HeldOutText(name, kind, np.asarray(ids, dtype=np.int64), sum(len(d.encode("utf-8")) for d in docs),
                       sum(count_words(d) for d in docs), len(docs))


def split_documents(ids: np.ndarray, eos_id: int) -> list[np.ndarray]:
    """Token runs between EOS tokens (empty runs dropped)."""
    cuts = np.flatnonzero(ids == eos_id)
    parts = np.split(ids, cuts)
    return [p[p != eos_id] for p in parts if np.any(p != eos_id)]


def read_text_file(path: str | Path) -> list[str]:
    """The documents of a UTF-8 text file (split on <|endoftext|>; one document without)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--text_file {str(p)!r} does not exist; give a UTF-8 .txt file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"--text_file {str(p)!r} is not UTF-8 text") from None
    docs = [d.strip("\n") for d in text.split(DOC_SEPARATOR)]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"--text_file {str(p)!r} is empty")
    return docs


def hub_validation_documents(spec: str, max_tokens: int | None, tokenizer: Tokenizer) -> list[str]:
    """Validation documents of an HF dataset named as for `--lang_dataset` (tinystories,
    wikitext103, ..., hf:<repo>[:<config>]), read through `unified.text.textcache` (its own
    validation split, or the documents training holds out); stops once `max_tokens` are read."""
    if not is_hub_spec(spec):
        raise UnknownNameError("--ppl_dataset", spec, [*HUB_SOURCES, "hf:<repo>[:<config>]"])
    try:
        src = resolve_hub(spec)
        docs, n = [], 0
        for d in hub_documents(src, "val", hub_has_validation(src)):
            docs.append(d)
            n += len(tokenizer.encode(d)) + 1
            if max_tokens is not None and n >= max_tokens:
                break
    except DataError as exc:
        reason = "the hub cannot be reached and it is not cached" if hub_offline() else str(exc)[:200]
        raise DataError(f"cannot read --ppl_dataset {spec!r} ({reason}); "
                        f"use --text_file PATH with local text") from None
    if not docs:
        raise DataError(f"--ppl_dataset {spec!r} has no validation documents; use --text_file PATH")
    return docs


def run_validation_text(checkpoint: dict[str, Any], tokenizer: Tokenizer) -> HeldOutText | str:
    """The validation split of the run's language data, or the reason it is unavailable.

    The source is the one training resolved (`checkpoint["language"]["source"]`, e.g.
    "procedural", "tinystories" or a path), else `train_config["lang_data"]` of older runs. Local
    text is split by `corpus_from_path` (in memory), other sources load through
    `unified.text.corpus.load_corpus` (validation streams are fixed by the source, whatever the
    training size)."""
    source = (checkpoint.get("language") or {}).get("source") or \
        (checkpoint.get("train_config") or {}).get("lang_data")
    if not source:
        return ("the run trained without language data and no --text_file or --ppl_dataset was given; "
                "pass --text_file PATH to measure perplexity")
    try:
        if Path(source).exists():
            corpus = corpus_from_path(source, tokenizer)
        else:
            corpus = load_corpus(source, tokenizer, procedural_bytes=4096, progress=False)
    except (DataError, ConfigError) as exc:
        return f"the run's language data {source!r} cannot be read here ({exc}); pass --text_file PATH"
    val = np.asarray(corpus.val, dtype=np.int64)
    docs = [tokenizer.decode(d.tolist()) for d in split_documents(val, tokenizer.eos_id)]
    return HeldOutText(corpus.name, "run_validation", val, int(corpus.val_bytes), sum(count_words(d) for d in docs),
                       len(docs), entropy_bits_per_byte=getattr(corpus, "entropy_bits_per_byte", None))


def truncate(text: HeldOutText, max_tokens: int | None, tokenizer: Tokenizer) -> HeldOutText:
    """The first `max_tokens` tokens of `text`, with bytes and words recounted from the kept
    documents (decoded); unchanged when it already fits."""
    if max_tokens is None or len(text.ids) <= max_tokens:
        return text
    ids = text.ids[:max_tokens]
    docs = [tokenizer.decode(d.tolist()) for d in split_documents(ids, tokenizer.eos_id)]
    return HeldOutText(text.name, text.kind, ids, sum(len(d.encode("utf-8")) for d in docs),
                       sum(count_words(d) for d in docs), len(docs), truncated=True,
                       entropy_bits_per_byte=text.entropy_bits_per_byte)


def resolve_text(settings: PerplexitySettings, checkpoint: dict[str, Any], tokenizer: Tokenizer) -> HeldOutText | str:
    """The held-out text named by the settings (user mistakes raise), or the run's validation
    split, or a string saying why there is none."""
    if settings.text_file:
        text = from_documents(str(settings.text_file), "text_file", read_text_file(settings.text_file), tokenizer)
    elif settings.dataset:
        docs = hub_validation_documents(settings.dataset, settings.max_tokens, tokenizer)
        text = from_documents(settings.dataset, "dataset", docs, tokenizer)
    else:
        found = run_validation_text(checkpoint, tokenizer)
        if isinstance(found, str):
            return found
        text = found
    return truncate(text, settings.max_tokens, tokenizer)


@torch.no_grad()
def window_nll(model: LanguageModel, ids: np.ndarray, prefix_id: int, eos_id: int, context: int,
               batch_size: int = 64, max_batch_logits: int = 1 << 26) -> list[tuple[float, int]]:
    """(summed NLL in nats, scored tokens) of each disjoint window of `context` tokens, each fed
    after `prefix_id` (BOS); EOS targets are not scored. Windows of equal length are batched (at
    most `CPU_FORWARD_TOKENS` tokens per forward on CPU); sums are in float64."""
    model.eval()
    device = next(model.parameters()).device
    windows = [ids[s:s + context] for s in range(0, len(ids), context)]
    small = device.type == "cpu" and model.parallel_in_time  # a loop over positions wants big batches
    rows = max(1, min(batch_size, max_batch_logits // (context * model.cfg.vocab_size),
                      CPU_FORWARD_TOKENS // context if small else batch_size))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(windows)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_len.setdefault(len(w), []).append(i)
    for length, idx_all in sorted(by_len.items()):
        for b in range(0, len(idx_all), rows):
            idx = idx_all[b:b + rows]
            tgt = torch.from_numpy(np.stack([windows[i] for i in idx]).astype(np.int64)).to(device)
            inp = torch.cat([torch.full((len(idx), 1), prefix_id, dtype=torch.long, device=device), tgt[:, :-1]], dim=1)
            logits = model(inp).logits
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                  reduction="none").view(len(idx), length)
            keep = tgt != eos_id
            sums = (nll.double() * keep).sum(dim=1).cpu().tolist()
            counts = keep.sum(dim=1).cpu().tolist()
            for j, i in enumerate(idx):
                out[i] = (float(sums[j]), int(counts[j]))
    return out


def perplexity_metrics(windows: Sequence[tuple[float, int]], n_bytes: int, n_words: int) -> dict[str, Any]:
    """Token / word perplexity, bits per byte and NLL per token with their standard errors."""
    nll, se = ratio_stderr(windows)
    tokens = sum(n for _, n in windows)
    total = sum(s for s, _ in windows)
    bpb_per_nll = tokens / (n_bytes * math.log(2)) if n_bytes else float("nan")
    per_word = tokens / n_words if n_words else float("nan")
    ppl = math.exp(nll) if math.isfinite(nll) else float("nan")
    word_ppl = math.exp(total / n_words) if n_words else float("nan")
    return {"token_perplexity": ppl, "token_perplexity_stderr": ppl * se,
            "bits_per_byte": total / (n_bytes * math.log(2)) if n_bytes else float("nan"),
            "bits_per_byte_stderr": se * bpb_per_nll,
            "word_perplexity": word_ppl, "word_perplexity_stderr": word_ppl * se * per_word,
            "nll_per_token": nll, "nll_per_token_stderr": se,
            "tokens": tokens, "bytes": n_bytes, "words": n_words, "windows": len(windows)}


def run_perplexity(model: LanguageModel, tokenizer: Tokenizer, checkpoint: dict[str, Any],
                   settings: PerplexitySettings) -> dict[str, Any]:
    """The suite's payload; `available: false` with a reason when there is no held-out text."""
    settings.validate()
    context = int(model.cfg.max_seq_len)
    base = {"context_len": context, "prefix_token": settings.prefix, "stderr_method": STDERR_METHOD,
            "max_tokens": settings.max_tokens}
    text = resolve_text(settings, checkpoint, tokenizer)
    if isinstance(text, str):
        return {"available": False, "reason": text, **base}
    if len(text.ids) == 0:
        raise DataError(f"held-out text {text.name!r} holds no tokens")
    prefix_id = tokenizer.bos_id if settings.prefix == "bos" else tokenizer.eos_id
    windows = window_nll(model, text.ids, prefix_id, tokenizer.eos_id, context,
                         settings.batch_size, settings.max_batch_logits)
    return {"available": True, **perplexity_metrics(windows, text.bytes, text.words),
            "source": {"kind": text.kind, "name": text.name, "documents": text.documents,
                       "stream_tokens": int(len(text.ids)), "truncated": text.truncated,
                       "entropy_bits_per_byte": text.entropy_bits_per_byte}, **base}
