"""Batched generation with the decoding cache, for every variant.

Prompts of equal length are grouped into one batch (no padding, so recurrent variants need no
masks); each group is prefilled once and then decoded one token per step through the cache
(`decode_steps`, shared with `unified.evals.sample_text`). Each prompt may have its own token
budget, so prompts of equal length from different grid cells share a batch; a batch stops as
soon as every row has emitted EOS or used its budget. Greedy by default; temperature / top-k /
top-p sampling uses an explicit seeded generator.

The one-token steps run on one intra-op thread (`step_context`): their products are too small
to split, and with two or more threads on shared cores the synchronisation at every operator
made them several times slower (issue 20: the algorithmic suite took 91 s with --threads 2 and
20 s with 1). Prefills keep the caller's thread count.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from unified.models.base import LanguageModel
from unified.models.cache_rows import CacheRowsError, stack_rows, take_rows
from unified.models.shared_prefill import Prefilled, prefill_shared
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


@contextlib.contextmanager
def step_context(device: torch.device | str) -> Iterator[None]:
    """Run one cached decoding step: on CPU with one intra-op thread and the default float32
    matmul path (`small_matmul_precision`); the caller's settings are restored afterwards."""
    threads = torch.get_num_threads()
    single = torch.device(device).type == "cpu" and threads > 1
    if single:
        torch.set_num_threads(1)
    try:
        with small_matmul_precision(device):
            yield
    finally:
        if single:
            torch.set_num_threads(threads)


class CachedDecoder:
    """Prefilled prompts decoded one token per step through the model's cache.

    `logits` (n, V) are the last-position logits of the `rows` still decoded (indices into the
    original batch); `step(tokens)` feeds one token per such row; `keep(mask)` drops the other
    rows from the cache, so finished rows cost nothing (returns False, keeping every row, when
    the variant's cache cannot be split by rows, see `unified.models.cache_rows`)."""

    def __init__(self, model: LanguageModel, cache: Any, logits: torch.Tensor):
        self.model, self.cache, self.logits = model, cache, logits
        self.rows = torch.arange(logits.shape[0])
        self.device = logits.device

    @classmethod
    @torch.no_grad()
    def prefill(cls, model: LanguageModel, ids: torch.Tensor) -> "CachedDecoder":
        """Run the prompts `ids` (B, T) through a fresh cache."""
        model.eval()
        out = model(ids, cache=model.init_cache(ids.shape[0]))
        return cls(model, out.cache, out.logits[:, -1])

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> None:
        """Feed `tokens` (one per decoded row) and keep the logits of the next position."""
        with step_context(self.device):
            out = self.model(tokens[:, None], cache=self.cache)
        self.cache, self.logits = out.cache, out.logits[:, -1]

    def keep(self, mask: torch.Tensor) -> bool:
        """Keep only the decoded rows where `mask` (one bool per row) is True."""
        idx = torch.nonzero(mask.cpu(), as_tuple=False).flatten()
        try:
            self.cache = take_rows(self.cache, idx, len(self.rows))
        except CacheRowsError:
            return False
        self.logits, self.rows = self.logits[idx.to(self.device)], self.rows[idx]
        return True


@torch.no_grad()
def decode_steps(model: LanguageModel, ids: torch.Tensor, settings: DecodeSettings,
                 gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) of the prompts `ids` (B, T), one step at a time, for at
    most `settings.max_new_tokens` steps. The prompts are prefilled once; each step feeds the
    chosen tokens back through the model's cache. The caller stops early by closing the
    iterator: no forward runs whose output nobody reads."""
    dec = CachedDecoder.prefill(model, ids)
    for i in range(settings.max_new_tokens):
        nxt = choose_next(dec.logits, settings, gen)
        yield nxt
        if i == settings.max_new_tokens - 1:
            return
        dec.step(nxt)


@torch.no_grad()
def generate(model: LanguageModel, prompts: Sequence[Sequence[int]], eos_id: int,
             settings: DecodeSettings | None = None, batch_size: int = 64,
             max_new_tokens: Sequence[int] | None = None,
             on_batch: Callable[[int], None] | None = None, share_prefixes: bool = False) -> Generation:
    """Continue each prompt until EOS or its token budget, using the model's cache.

    The budget is `settings.max_new_tokens`, or `max_new_tokens[i]` for prompt i when given
    (a row's tokens do not depend on the budgets of the rows it shares a batch with). Prompts of
    equal length are batched, at most `batch_size` rows, rows of similar budget together;
    `on_batch(n)` is called after each batch of n rows (progress bars). `share_prefixes`: the
    prompts of one length are prefilled along their prefix tree, each shared prefix once
    (`unified.models.shared_prefill`; worth it when prompts share long prefixes, as needle
    prompts do), then decoded in batches as usual; variants whose prefill loops over positions
    (`LanguageModel.parallel_in_time`) or whose cache cannot be split by rows, and CPU runs
    with several intra-op threads, are prefilled per batch."""
    s = settings or DecodeSettings()
    budgets = [s.max_new_tokens] * len(prompts) if max_new_tokens is None else [int(m) for m in max_new_tokens]
    if len(budgets) != len(prompts):
        raise ValueError(f"generate: {len(prompts)} prompts but {len(budgets)} token budgets")
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
    # several CPU threads: the tree's many batch-1 forwards synchronise the threads at every
    # operator, which on shared cores made the needle suite 5x slower (issue 20, --threads 2)
    share = share_prefixes and model.parallel_in_time and (device.type != "cpu" or torch.get_num_threads() == 1)
    for length in sorted(groups):
        idx_all = sorted(groups[length], key=lambda i: budgets[i])  # stable: prompt order within a budget
        shared = _prefill_shared(model, [prompts[i] for i in idx_all]) if share else None
        for b in range(0, len(idx_all), batch_size):
            idx = idx_all[b:b + batch_size]
            start = _stacked(model, shared[b:b + len(idx)]) if shared is not None else None
            if start is None:
                ids = torch.tensor([list(prompts[i]) for i in idx], dtype=torch.long, device=device)
                start = (CachedDecoder.prefill(model, ids), None)
            out, st, eos, ans = decode_rows(start[0], eos_id, s, gen, [budgets[i] for i in idx], start[1])
            for j, i in enumerate(idx):
                tokens[i], steps[i], ended[i], answer_steps[i] = out[j], st[j], eos[j], ans[j]
            if on_batch is not None:
                on_batch(len(idx))
    return Generation(tokens, steps, ended, answer_steps)


def _prefill_shared(model: LanguageModel, prompts: list[Sequence[int]]) -> list[Prefilled] | None:
    """`prefill_shared`, or None when the variant's cache cannot be split by rows."""
    try:
        return prefill_shared(model, prompts)
    except CacheRowsError:
        return None


def _stacked(model: LanguageModel, rows: Sequence[Prefilled]):
    """A decoder over separately prefilled rows and their prompt steps, or None when their
    caches cannot be stacked."""
    try:
        cache = stack_rows([r.cache for r in rows])
    except CacheRowsError:
        return None
    dec = CachedDecoder(model, cache, torch.cat([r.logits for r in rows], dim=0))
    if not rows[0].reported:
        zeros = torch.zeros(len(rows))
        return dec, (zeros, zeros, zeros, zeros)
    ones = torch.ones(len(rows))
    return dec, (torch.tensor([r.steps for r in rows]), torch.tensor([float(r.positions) for r in rows]),
                 torch.tensor([r.last_steps for r in rows]), ones)


def decode_rows(dec: CachedDecoder, eos_id: int, s: DecodeSettings, gen: torch.Generator | None,
                budgets: Sequence[int], prompt_steps: tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                            torch.Tensor] | None = None):
    """Decode the prefilled rows of `dec` until each has emitted EOS or used its budget; per
    row: tokens (EOS excluded), mean compute steps, ended on EOS, mean answer-position steps.

    With greedy decoding finished rows are dropped from the batch once they are half of it (a
    row's tokens do not depend on the rows beside it; copying the cache at most log2(B) times
    bounds the cost of dropping at long contexts); sampling keeps every row, so the random
    stream stays the same.
    `prompt_steps` (step sum and count over all prompt positions, and over the last one) is
    given when the prompts were not prefilled by one forward (else they are read from it)."""
    model = dec.model
    B = len(dec.rows)
    budget = torch.tensor(list(budgets), dtype=torch.long)
    ended = torch.zeros(B, dtype=torch.bool)
    finished = budget <= 0  # a row is finished once it emitted EOS or used its budget
    kept: list[torch.Tensor] = []  # per step: (B,) token ids, -1 where the row emitted nothing
    if prompt_steps is not None:
        step_sum, step_count, ans_sum, ans_count = prompt_steps
    else:  # the prefill: every position of every row
        zeros, everyone = torch.zeros(B), torch.ones(B, dtype=torch.bool)
        step_sum, step_count = _steps(model, zeros, zeros, everyone, dec.rows)
        ans_sum, ans_count = _steps(model, zeros, zeros, everyone, dec.rows, last_only=True)
    nxt = torch.zeros(0, dtype=torch.long)
    for i in range(max(budgets, default=0)):
        if bool(finished.all()):
            break
        if i > 0:
            dec.step(nxt)
            step_sum, step_count = _steps(model, step_sum, step_count, ~finished, dec.rows)
            ans_sum, ans_count = _steps(model, ans_sum, ans_count, ~finished, dec.rows)
        nxt = choose_next(dec.logits, s, gen)
        token = torch.full((B,), -1, dtype=torch.long)
        token[dec.rows] = nxt.cpu()
        is_eos = (token == eos_id) & ~finished
        kept.append(torch.where(finished | is_eos, torch.full_like(token, -1), token))
        ended |= is_eos
        finished |= is_eos | (budget <= i + 1)
        going = ~finished[dec.rows]
        idle = int((~going).sum())  # finished rows still computed; dropped once they are half the batch
        if s.temperature <= 0 and 2 * idle >= len(going) and bool(going.any()) and dec.keep(going):
            nxt = nxt[going.to(nxt.device)]
    grid = torch.stack(kept, dim=1).tolist() if kept else [[] for _ in range(B)]
    result = [[t for t in row if t >= 0] for row in grid]

    def mean(total, count):
        return [float(total[j] / count[j]) if count[j] > 0 else None for j in range(B)]

    return result, mean(step_sum, step_count), ended.tolist(), mean(ans_sum, ans_count)


def _steps(model, step_sum, step_count, active, rows=None, last_only: bool = False):
    """Accumulate per-row compute steps of the last forward (variants that expose `last_steps`)
    into the rows `rows` of the batch (all rows when None) that are `active`; `last_only`: only
    its last position (the one that predicts the next, generated, token)."""
    last = getattr(model, "last_steps", None)
    if last is None:
        return step_sum, step_count
    last = last.detach().float().cpu()
    if last_only:
        last = last[:, -1:]
    rows = torch.arange(len(step_sum)) if rows is None else rows
    add_sum, add_count = torch.zeros_like(step_sum), torch.zeros_like(step_count)
    add_sum[rows], add_count[rows] = last.sum(dim=1), float(last.shape[1])
    return step_sum + add_sum * active, step_count + add_count * active
