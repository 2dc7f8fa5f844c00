"""Batched generation with the decoding cache, for every variant.

Prompts of equal length are grouped into one batch (no padding, so recurrent variants need no
masks); each group is prefilled once and then decoded one token per step through the cache.
Greedy by default; temperature / top-k / top-p sampling uses an explicit seeded generator.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch

from unified.models.base import LanguageModel
from unified.ops.precision import small_matmul_precision


@dataclass
class DecodeSettings:
    """How tokens are chosen; recorded in results metadata."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


def choose_next(logits: torch.Tensor, s: DecodeSettings, gen: torch.Generator | None) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if s.temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / s.temperature
    if s.top_k > 0:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > s.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1)


@dataclass
class Generation:
    """Generated ids (EOS excluded), whether each prompt ended with EOS (False: it ran out of
    `max_new_tokens`), and, for adaptive variants, mean compute steps per prompt: over every
    position the model ran (prompt and generated tokens, `mean_steps`) and over the answer
    positions only (`answer_steps`: the positions whose output is a generated token or the EOS,
    i.e. the last prompt position and each fed-back generated token)."""

    tokens: list[list[int]]
    mean_steps: list[float | None]
    ended: list[bool] | None = None
    answer_steps: list[float | None] | None = None


@torch.no_grad()
def generate(model: LanguageModel, prompts: Sequence[Sequence[int]], eos_id: int,
             settings: DecodeSettings | None = None, batch_size: int = 64) -> Generation:
    """Continue each prompt until EOS or `max_new_tokens`, using the model's cache."""
    s = settings or DecodeSettings()
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(s.seed) if s.temperature > 0 else None
    tokens: list[list[int]] = [[] for _ in prompts]
    steps: list[float | None] = [None] * len(prompts)
    ended: list[bool] = [False] * len(prompts)
    answer_steps: list[float | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[len(p)].append(i)
    for length in sorted(groups):
        idx_all = groups[length]
        for b in range(0, len(idx_all), batch_size):
            idx = idx_all[b:b + batch_size]
            out, st, eos, ans = _generate_group(model, [prompts[i] for i in idx], eos_id, s, gen, device)
            for j, i in enumerate(idx):
                tokens[i], steps[i], ended[i], answer_steps[i] = out[j], st[j], eos[j], ans[j]
    return Generation(tokens, steps, ended, answer_steps)


def _generate_group(model, prompts, eos_id, s, gen, device):
    ids = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=device)
    B = ids.shape[0]
    cache = model.init_cache(B)
    out = model(ids, cache=cache)
    everyone = torch.ones(B, dtype=torch.bool)
    step_sum, step_count = _steps(model, torch.zeros(B), torch.zeros(B), everyone)
    ans_sum, ans_count = _steps(model, torch.zeros(B), torch.zeros(B), everyone, last_only=True)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    result: list[list[int]] = [[] for _ in range(B)]
    for i in range(s.max_new_tokens):
        nxt = choose_next(out.logits[:, -1], s, gen)
        done |= nxt == eos_id
        for j in range(B):
            if not done[j]:
                result[j].append(int(nxt[j]))
        if bool(done.all()) or i == s.max_new_tokens - 1:  # no forward whose output nobody reads
            break
        with small_matmul_precision(device):  # one-token steps: the default fp32 path is faster on CPU
            out = model(nxt[:, None], cache=out.cache)
        step_sum, step_count = _steps(model, step_sum, step_count, ~done.cpu())
        ans_sum, ans_count = _steps(model, ans_sum, ans_count, ~done.cpu())

    def mean(total, count):
        return [float(total[j] / count[j]) if count[j] > 0 else None for j in range(B)]

    return result, mean(step_sum, step_count), done.cpu().tolist(), mean(ans_sum, ans_count)


def _steps(model, step_sum, step_count, active, last_only: bool = False):
    """Accumulate per-row compute steps of the last forward (variants that expose `last_steps`);
    `last_only`: only its last position (the one that predicts the next, generated, token)."""
    last = getattr(model, "last_steps", None)
    if last is None:
        return step_sum, step_count
    last = last.detach().float().cpu()
    if last_only:
        last = last[:, -1:]
    step_sum = step_sum + last.sum(dim=1) * active
    step_count = step_count + last.shape[1] * active
    return step_sum, step_count
