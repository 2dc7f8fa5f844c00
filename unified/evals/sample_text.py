"""Text generation for people and for other harnesses: prompts as text, streaming, stop strings.

`unified.models.decoding.generate` is the batched, token-level generator the evaluation suites use;
this module adds what a person (sample.py) or lm-eval's `generate_until` needs on top of the
same token choice (`decoding.choose_next`) and the same per-variant cache:
- `encode_prompt`: text -> ids with the token training put before such text (`--prefix auto`:
  BOS before an algorithmic prompt such as "add 12+34=", EOS before language text, which is how
  documents start in packed training data);
- `decode_steps` (from `unified.models.decoding`, the generator `generate` runs on too): prefill
  once, then one token per step through the cache, yielded as decoded, so sample.py prints
  tokens as they come;
- `TextStreamer`: token ids -> text increments that never split a multi-byte character;
- `generate_until`: batched continuation of token prompts until EOS, a stop string or a token
  budget (prompts of equal length share a batch: no padding, so recurrent variants need no masks).
Greedy decoding (temperature 0) is deterministic; sampling draws from an explicit generator
seeded by `DecodeSettings.seed`, so the same seed gives the same text.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from unified.data.tasks import TASKS
from unified.errors import ConfigError, UnknownNameError
from unified.models import LanguageModel
from unified.models.decoding import DecodeSettings, decode_steps
from unified.text.tokenizer import Tokenizer

PREFIXES = ("auto", "bos", "eos", "none")


def validate_settings(s: DecodeSettings) -> None:
    """Reject decoding settings that cannot be used, one line each (what was wrong, what is accepted)."""
    if s.max_new_tokens < 1:
        raise ConfigError(f"--max_new_tokens must be >= 1, got {s.max_new_tokens}")
    if not (math.isfinite(s.temperature) and s.temperature >= 0):
        raise ConfigError(f"--temperature must be a finite number >= 0 (0 = greedy), got {s.temperature}")
    if s.top_k < 0:
        raise ConfigError(f"--top_k must be >= 0 (0 = off), got {s.top_k}")
    if not (0 < s.top_p <= 1):
        raise ConfigError(f"--top_p must lie in (0, 1] (1 = off), got {s.top_p}")


def is_algorithmic_prompt(text: str) -> bool:
    """Whether `text` starts like a task prompt ("<tag> ...", e.g. "add 12+34=")."""
    head = text.split(" ", 1)[0]
    return " " in text and any(head == t.tag for t in TASKS.values())


def encode_prompt(text: str, tokenizer: Tokenizer, prefix: str = "auto") -> list[int]:
    """Token ids of a prompt with its conditioning token: `bos`, `eos`, `none`, or `auto` (BOS
    before an algorithmic prompt, as in training's "BOS prompt answer EOS" rows; EOS before any
    other text, as before every document in packed language data). An empty prompt with prefix
    `none` is an error: the model needs at least one token to condition on."""
    if prefix not in PREFIXES:
        raise UnknownNameError("--prefix", prefix, PREFIXES)
    if prefix == "auto":
        prefix = "bos" if is_algorithmic_prompt(text) else "eos"
    head = {"bos": [tokenizer.bos_id], "eos": [tokenizer.eos_id], "none": []}[prefix]
    ids = head + tokenizer.encode(text)
    if not ids:
        raise ConfigError("the prompt is empty and --prefix none adds no token; give a prompt or another --prefix")
    return ids


def make_generator(settings: DecodeSettings, device: torch.device | str) -> torch.Generator | None:
    """The seeded generator sampling draws from (None for greedy, which draws nothing)."""
    if settings.temperature <= 0:
        return None
    return torch.Generator(device=device).manual_seed(settings.seed)


class TextStreamer:
    """Turns generated token ids into printable text increments.

    The text so far is re-decoded at each token and only what is new is returned, so tokens
    that decode differently in context (BPE) stay right; a trailing U+FFFD (a multi-byte
    character cut by the byte tokenizer) is held back until the character completes."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer, self.ids, self.shown = tokenizer, [], 0

    @property
    def text(self) -> str:
        """Everything decoded so far."""
        return self.tokenizer.decode(self.ids)

    def push(self, token_id: int) -> str:
        """Add one token; the text that became printable (possibly empty)."""
        self.ids.append(int(token_id))
        text = self.text
        end = len(text.rstrip("\ufffd"))
        new = text[self.shown:end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return new

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the end)."""
        text = self.text
        new, self.shown = text[self.shown:], len(text)
        return new


@dataclass
class Sample:
    """One generated continuation: its token ids (EOS excluded), its text, and whether it ended
    with EOS (False: it ran out of `max_new_tokens`)."""

    ids: list[int]
    text: str
    ended: bool


def stream_sample(model: LanguageModel, tokenizer: Tokenizer, prompt_ids: Sequence[int], settings: DecodeSettings,
                  gen: torch.Generator | None = None, write: Callable[[str], None] | None = None) -> Sample:
    """Continue one prompt until EOS or `max_new_tokens`, calling `write` with each piece of
    text as soon as it is decoded. `gen` carries the sampling stream across calls (several
    samples from one seed); without it a generator seeded with `settings.seed` is made."""
    device = next(model.parameters()).device
    if gen is None:
        gen = make_generator(settings, device)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    streamer, ended = TextStreamer(tokenizer), False
    steps = decode_steps(model, ids, settings, gen)
    for nxt in steps:
        token = int(nxt[0])
        if token == tokenizer.eos_id:
            ended = True
            steps.close()
            break
        piece = streamer.push(token)
        if write and piece:
            write(piece)
    rest = streamer.flush()
    if write and rest:
        write(rest)
    return Sample(streamer.ids, streamer.text, ended)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to (not including) the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


@torch.no_grad()
def generate_until(model: LanguageModel, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]],
                   stops: Sequence[Sequence[str]], settings: DecodeSettings, batch_size: int = 16,
                   on_done: Callable[[int], None] | None = None) -> list[str]:
    """Continue each token prompt until EOS, one of its stop strings (`stops[i]`) or
    `max_new_tokens`; returns the generated text cut before the stop string. Prompts of equal
    length are decoded together through the cache; a batch stops as soon as every row is done.
    `on_done(n)` is called after each batch with its size (progress bars)."""
    if len(stops) != len(prompts):
        raise ConfigError(f"generate_until: {len(prompts)} prompts but {len(stops)} stop lists")
    device = next(model.parameters()).device
    gen = make_generator(settings, device)
    out: list[str] = [""] * len(prompts)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[len(p)].append(i)
    for length in sorted(groups):
        for b in range(0, len(groups[length]), batch_size):
            idx = groups[length][b:b + batch_size]
            ids = torch.tensor([list(prompts[i]) for i in idx], dtype=torch.long, device=device)
            tokens: list[list[int]] = [[] for _ in idx]
            done = [False] * len(idx)
            steps = decode_steps(model, ids, settings, gen)
            for nxt in steps:
                for j, t in enumerate(nxt.tolist()):
                    if done[j]:
                        continue
                    if t == tokenizer.eos_id:
                        done[j] = True
                        continue
                    tokens[j].append(t)
                    done[j] = cut_at_stop(tokenizer.decode(tokens[j]), stops[idx[j]])[1]
                if all(done):
                    steps.close()
                    break
            for j, i in enumerate(idx):
                out[i] = cut_at_stop(tokenizer.decode(tokens[j]), stops[i])[0]
            if on_done:
                on_done(len(idx))
    return out
