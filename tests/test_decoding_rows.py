"""Decoding machinery of the fast eval (issue 20): cache row operations for every variant,
per-row token budgets, dropping finished rows, prefix-shared prefill, one-thread steps."""
from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from unified.evals import sample_text
from unified.models import decoding, variant_names
from unified.models.cache_rows import CacheRowsError, stack_rows, take_rows
from unified.models.decoding import DecodeSettings, generate, step_context
from unified.models.shared_prefill import prefill_shared

V = 61


def _ids(seed: int, b: int, t: int) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", variant_names())
def test_cache_rows_continue_like_the_full_forward(variant: str) -> None:
    """Rows taken (reordered, repeated) from a prefilled cache, and caches prefilled one row at a
    time then stacked, continue exactly like one forward over the whole sequences."""
    model = tiny_model(variant).eval()
    ids = _ids(1, 3, 21)
    with torch.no_grad():
        full = model(ids).logits
        cache = model(ids[:, :13], cache=model.init_cache(3)).cache
        picked = take_rows(cache, [2, 0, 2], 3)
        got = model(ids[[2, 0, 2], 13:], cache=picked).logits
        torch.testing.assert_close(got, full[[2, 0, 2], 13:], atol=1e-5, rtol=1e-4)
        assert model(ids[:, 13:], cache=cache).logits.shape == (3, 8, V)  # the source cache is intact
        parts = [model(ids[j:j + 1, :13], cache=model.init_cache(1)).cache for j in range(3)]
        got = model(ids[:, 13:], cache=stack_rows(parts)).logits
        torch.testing.assert_close(got, full[:, 13:], atol=1e-5, rtol=1e-4)


def test_cache_rows_refuse_what_they_cannot_map() -> None:
    class Odd:
        def __init__(self):
            self.shared = torch.zeros(5, 3)  # no batch dimension of 2
            self.pos = 0

    with pytest.raises(CacheRowsError, match="batch dimension"):
        take_rows(Odd(), [0], batch=2)
    a, b = Odd(), Odd()
    b.pos = 4
    with pytest.raises(CacheRowsError, match="different positions"):
        stack_rows([a, b])


@pytest.mark.parametrize("variant", ["baseline", "act", "hrnn", "rsm"])
def test_per_row_budgets_and_dropped_rows_match_separate_runs(variant: str, monkeypatch) -> None:
    """A batch with mixed budgets gives each row what a batch of its own budget gives; greedy
    decoding stops computing rows that have finished."""
    model = tiny_model(variant).eval()
    with torch.no_grad():
        model.tok_emb.weight[7] *= 6.0  # token 7 plays EOS: some rows end early
    prompts = _ids(2, 6, 9).tolist()
    budgets = [1, 6, 3, 6, 2, 5]
    batch_rows: list[int] = []
    real = model.forward

    def counting(ids, targets=None, cache=None):
        batch_rows.append(ids.shape[0])
        return real(ids, targets, cache)

    monkeypatch.setattr(model, "forward", counting)
    mixed = generate(model, prompts, 7, DecodeSettings(max_new_tokens=6), max_new_tokens=budgets)
    assert mixed.ended is not None and any(mixed.ended)
    assert batch_rows[0] == 6 and min(batch_rows) < 6  # rows left the batch as they finished
    for i, m in enumerate(budgets):
        alone = generate(model, [prompts[i]], 7, DecodeSettings(max_new_tokens=m))
        assert mixed.tokens[i] == alone.tokens[0] and len(mixed.tokens[i]) <= m
        assert mixed.ended[i] == alone.ended[0]
        if alone.mean_steps[0] is not None:
            assert mixed.mean_steps[i] == pytest.approx(alone.mean_steps[0])
            assert mixed.answer_steps[i] == pytest.approx(alone.answer_steps[0])


@pytest.mark.parametrize("variant", ["baseline", "latent", "ssm_mem", "reservoir", "rsm"])
def test_prefix_shared_prefill_matches_separate_prefills(variant: str) -> None:
    """Prompts sharing prefixes (as needle depths do) give the same continuations, steps and
    last logits whether each shared prefix is prefilled once or every prompt separately."""
    model = tiny_model(variant).eval()
    hay = _ids(3, 1, 30)[0].tolist()
    needle = [5, 6, 7, 8]
    prompts = [[1, *hay[:a], *needle, *hay[a:]] for a in (0, 9, 9, 17, 30)]  # two identical prompts
    pre = prefill_shared(model, prompts)
    with torch.no_grad():
        full = model(torch.tensor(prompts)).logits[:, -1]
    torch.testing.assert_close(torch.cat([p.logits for p in pre]), full, atol=1e-5, rtol=1e-4)
    assert pre[1] is pre[2]
    s = DecodeSettings(max_new_tokens=5)
    shared = generate(model, prompts, 0, s, batch_size=3, share_prefixes=True)
    plain = generate(model, prompts, 0, s, batch_size=3)
    assert shared.tokens == plain.tokens and shared.ended == plain.ended
    if plain.mean_steps[0] is None:  # fixed-compute variants report no steps
        assert shared.mean_steps == plain.mean_steps
    else:
        assert shared.mean_steps == pytest.approx(plain.mean_steps)
        assert shared.answer_steps == pytest.approx(plain.answer_steps)


def test_sampling_keeps_the_random_stream() -> None:
    """Sampling never drops rows (the generator's draws stay those of the full batch)."""
    model = tiny_model("baseline").eval()
    prompts = _ids(4, 4, 6).tolist()
    s = DecodeSettings(max_new_tokens=6, temperature=1.0, seed=3)
    a = generate(model, prompts, 9, s)
    b = generate(model, prompts, 9, s)
    assert a.tokens == b.tokens
    gen = torch.Generator().manual_seed(3)
    rows = [[] for _ in prompts]
    for nxt in decoding.decode_steps(model, torch.tensor(prompts), s, gen):
        assert nxt.shape == (4,)
        for j, t in enumerate(nxt.tolist()):
            rows[j].append(t)
    for j, toks in enumerate(a.tokens):
        want = rows[j][:rows[j].index(9)] if 9 in rows[j] else rows[j]
        assert toks == want


def test_step_context_runs_one_thread_and_restores() -> None:
    assert sample_text.decode_steps is decoding.decode_steps  # one implementation
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with step_context("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), step_context("cpu"):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_sequential_variants_prefill_whole_batches(monkeypatch) -> None:
    """Variants whose forward loops over positions are not prefilled in batch-1 pieces (their
    cost follows the loop, not the tokens); parallel ones are."""
    assert tiny_model("baseline").parallel_in_time and tiny_model("ssm").parallel_in_time
    assert tiny_model("reservoir", reservoir_mode="linear").parallel_in_time
    assert not any(tiny_model(v).parallel_in_time for v in ("hrnn", "rsm", "reservoir"))
    prompts = [[1, 2, 3, 4, 5, a] for a in (6, 7, 8)]  # a long shared prefix
    for variant, pieces in (("hrnn", False), ("baseline", True)):
        model = tiny_model(variant).eval()
        shapes: list[tuple[int, int]] = []
        real = model.forward
        monkeypatch.setattr(model, "forward", lambda ids, targets=None, cache=None, real=real:
                            shapes.append(tuple(ids.shape)) or real(ids, targets, cache))
        generate(model, prompts, 0, DecodeSettings(max_new_tokens=2), share_prefixes=True)
        assert ((1, 5) in shapes) is pieces and ((3, 6) in shapes) is not pieces, (variant, shapes)
