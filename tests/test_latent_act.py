"""Tests of the latent thought stream and of ACT / PonderNet halting (unified/models/latent.py).

The property tests already check causality, cache equivalence and gradient reach at the
initial weights, where every position takes all K steps. These tests check what only shows when
halting varies: halting that learns from the ponder cost, per-position step counts, causality
and cache equivalence with input-dependent halting, and K changed at evaluation time.
"""
from __future__ import annotations

import math

import pytest
import torch

from helpers import TINY, tiny_model
from unified.errors import ConfigError, UnknownNameError

T = 40


def _ids(batch: int = 2, t: int = T, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (batch, t), generator=g)


def _input_dependent_halting(model, scale: float = 2.0, bias: float = -0.5) -> None:
    """Set the halting unit by hand so that its probability varies strongly with the input."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        model.halt.weight.copy_(scale * torch.randn(model.halt.weight.shape, generator=g))
        model.halt.bias.fill_(bias)


def _assert_cache_equivalent(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full forward == chunked + step-by-step decoding; returns the full logits and steps."""
    with torch.no_grad():
        full = model(ids).logits
        full_steps = model.last_steps.clone()
        for splits in ([0] + list(range(1, ids.shape[1] + 1)), [0, 5, 17, 18, 33, ids.shape[1]]):
            cache = model.init_cache(ids.shape[0])
            parts, steps = [], []
            for a, b in zip(splits[:-1], splits[1:]):
                out = model(ids[:, a:b], cache=cache)
                cache = out.cache
                parts.append(out.logits)
                steps.append(model.last_steps)
            torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)
            assert torch.equal(torch.cat(steps, dim=1), full_steps), "step counts differ when decoding"
    return full, full_steps


def _train(model, ids: torch.Tensor, steps: int, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad()
        out.loss.backward()
        opt.step()


def test_halting_adapts_to_lambda_ponder() -> None:
    """A large ponder weight drives the mean steps to min_K; without it they stay near max_K;
    and the trained halting gives different step counts to positions of one sequence."""
    K, min_K = 4, 1
    ids = _ids(batch=4, t=17, seed=0)
    result = {}
    for lam in (1.0, 0.0):
        model = tiny_model("act", K=K, min_K=min_K, lambda_ponder=lam).train()
        with torch.no_grad():
            assert model(ids[:, :-1]).aux["mean_steps"].item() == K  # training starts at max_K
        _train(model, ids, steps=40)
        model.eval()
        with torch.no_grad():
            result[lam] = model(ids[:, :-1]).aux["mean_steps"].item()
        if lam == 0.0:
            per_row = [row.unique().numel() for row in model.last_steps]
            assert min(per_row) >= 2, f"all positions of a sequence take the same steps: {model.last_steps}"
    assert result[1.0] <= min_K + 0.5, f"lambda_ponder=1 did not approach min_K: {result}"
    assert result[0.0] >= K - 1.5, f"lambda_ponder=0 moved far from max_K: {result}"
    assert result[0.0] - result[1.0] >= 1.5, f"no clear gap: {result}"


@pytest.mark.parametrize("halting", ["act", "pondernet"])
def test_steps_vary_per_position_and_stay_causal(halting: str) -> None:
    """With input-dependent halting: step counts differ across positions of one sequence, and
    causality, batch independence and cache equivalence still hold exactly."""
    model = tiny_model("act", K=5, halting=halting).eval()
    _input_dependent_halting(model, bias=-0.5 if halting == "act" else 0.0)
    ids = _ids()
    base, steps = _assert_cache_equivalent(model, ids)
    assert all(row.unique().numel() >= 3 for row in steps), f"steps do not vary per position: {steps}"
    assert steps.min() >= 1 and steps.max() <= 5
    with torch.no_grad():
        for t in (0, 8, 19, T - 2):
            changed = ids.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] + 7) % TINY["vocab_size"]
            out = model(changed).logits
            assert (out[:, : t + 1] - base[:, : t + 1]).abs().max().item() <= 1e-6, f"future leaks at {t}"
            assert torch.equal(model.last_steps[:, : t + 1], steps[:, : t + 1])
        other = ids.clone()
        other[1] = (other[1] + 3) % TINY["vocab_size"]
        out = model(other).logits
        assert (out[0] - base[0]).abs().max().item() <= 1e-6, "batch rows mix"
        assert torch.equal(model.last_steps[0], steps[0]), "halting is not decided per row"


@pytest.mark.parametrize("halting", ["act", "pondernet"])
def test_halting_head_gets_gradient_from_ponder_term(halting: str) -> None:
    """The ponder cost (ACT, through R) or the KL (PonderNet) alone gives the halting unit a
    non-zero gradient: it is a differentiable tensor, not a detached number."""
    model = tiny_model("act", K=4, halting=halting, lambda_ponder=0.5, prior_lambda=0.6).train()
    out = model.body(_ids())
    assert out.aux_loss is not None and out.aux_loss.requires_grad
    out.aux_loss.backward()
    for p in (model.halt.weight, model.halt.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # and with lambda_ponder = 0 the task loss alone reaches it (through the mixture weights)
    model = tiny_model("act", K=4, halting=halting, lambda_ponder=0.0).train()
    ids = _ids(t=T + 1)
    model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
    assert model.halt.weight.grad.abs().sum() > 0


def test_act_aux_and_ponder_cost() -> None:
    """aux holds scalar ponder cost and mean/max steps; the ponder cost is N + R per position
    and the loss includes lambda_ponder times it."""
    model = tiny_model("act", K=5, lambda_ponder=0.1).eval()
    _input_dependent_halting(model)
    ids = _ids(t=T + 1)
    with torch.no_grad():
        out = model(ids[:, :-1], targets=ids[:, 1:])
    for key in ("ponder_cost", "mean_steps", "max_steps", "expected_steps"):
        assert out.aux[key].numel() == 1
    steps = model.last_steps
    assert out.aux["mean_steps"].item() == pytest.approx(steps.mean().item())
    assert out.aux["max_steps"].item() == steps.max().item()
    # N <= N + R <= N + 1 per position, hence on average
    assert steps.mean() <= out.aux["ponder_cost"] <= steps.mean() + 1
    assert out.aux["aux_loss"].item() == pytest.approx(0.1 * out.aux["ponder_cost"].item(), rel=1e-5)


def test_pondernet_kl_starts_at_zero_and_pulls_to_prior() -> None:
    """At init the halting distribution equals the prior (KL = 0); started from late halting,
    a strong KL weight toward a prior that halts early lowers the expected number of steps."""
    ids = _ids(batch=4, t=17)
    model = tiny_model("act", K=4, halting="pondernet", prior_lambda=0.3).eval()
    with torch.no_grad():
        kl = model(ids[:, :-1]).aux["ponder_kl"].item()
    assert abs(kl) < 1e-5
    model = tiny_model("act", K=4, halting="pondernet", prior_lambda=0.9, lambda_ponder=1.0).eval()
    with torch.no_grad():
        model.halt.bias.fill_(math.log(0.2 / 0.8))  # start far from the prior: lambda = 0.2
        before = model(ids[:, :-1]).aux
    model.train()
    _train(model, ids, steps=25)
    model.eval()
    with torch.no_grad():
        after = model(ids[:, :-1]).aux
    assert after["ponder_kl"] < 0.5 * before["ponder_kl"]
    assert after["expected_steps"] < before["expected_steps"] - 0.5
    assert after["mean_steps"] < before["mean_steps"]


@pytest.mark.parametrize("variant", ["latent", "act"])
def test_K_override_changes_compute_keeps_cache_equivalence(variant: str) -> None:
    """Changing K after training changes the logits, the steps and the FLOPs count, and cached
    decoding still equals the full pass."""
    model = tiny_model(variant, K=3).eval()
    if variant == "act":
        with torch.no_grad():
            model.halt.bias.fill_(-20.0)  # never halts voluntarily: every position runs K steps
    ids = _ids()
    seen = {}
    for K in (2, 5):
        model.apply_overrides(K=K)
        logits, _ = _assert_cache_equivalent(model, ids)
        assert torch.all(model.last_steps == K)
        if variant == "act":
            with torch.no_grad():
                assert model(ids).aux["mean_steps"].item() == K
        seen[K] = (logits, model.flops_per_token(T), model.state_size(T))
    assert (seen[2][0] - seen[5][0]).abs().max() > 1e-4, "K has no effect on the output"
    assert seen[5][1] > seen[2][1]
    assert seen[5][2] == seen[2][2], "the cache layout must not depend on K"


@pytest.mark.parametrize("variant", ["latent", "act"])
def test_flops_count_every_core_iteration(variant: str) -> None:
    """Each extra iteration adds exactly 6 x (per-iteration weights) + 12 d T FLOPs per token."""
    a, b = tiny_model(variant, K=3), tiny_model(variant, K=7)
    per_iter = b.per_iteration_params()
    assert per_iter == a.per_iteration_params() > 0
    d = TINY["d_model"]
    assert b.flops_per_token(T) - a.flops_per_token(T) == 4 * (6 * per_iter + 12 * d * T)
    assert a.num_params() == b.num_params()  # iterations share weights


def test_bad_options_are_clear_errors() -> None:
    """Impossible settings raise one clear error naming the option."""
    with pytest.raises(ConfigError, match="min_K"):
        tiny_model("act", K=3, min_K=3)
    with pytest.raises(UnknownNameError, match="halting"):
        tiny_model("act", halting="sometimes")
    with pytest.raises(ConfigError, match="inject_layer"):
        tiny_model("latent", inject_layer=5)
    with pytest.raises(ConfigError, match="K"):
        tiny_model("latent", K=0)
    model = tiny_model("act", K=4, min_K=2)
    with pytest.raises(ConfigError, match="min_K"):
        model.apply_overrides(K=1)
    with pytest.raises(ConfigError, match="lambda_ponder"):
        model.apply_overrides(lambda_ponder=0.5)


@pytest.mark.parametrize("inject_layer", [0, 2])
def test_inject_at_either_end_is_causal_and_cached(inject_layer: int) -> None:
    """The thought stream may read the embeddings (0) or the last block's output (n_layers)."""
    model = tiny_model("latent", K=2, inject_layer=inject_layer).eval()
    ids = _ids()
    base, _ = _assert_cache_equivalent(model, ids)
    changed = ids.clone()
    changed[:, 11:] = (changed[:, 11:] + 1) % TINY["vocab_size"]
    with torch.no_grad():
        out = model(changed).logits
    assert (out[:, :11] - base[:, :11]).abs().max().item() <= 1e-6


def test_act_halting_bias_init_uses_all_steps() -> None:
    """Initial halting probability 1/S (S halting steps): every position starts at N = K."""
    model = tiny_model("act", K=6, min_K=2)
    assert model.halt.bias.item() == pytest.approx(math.log((1 / 5) / (1 - 1 / 5)))
    with torch.no_grad():
        model(_ids())
    assert torch.all(model.last_steps == 6)


def _eager_halting(model) -> None:
    """Halting that is likely (but input-dependent) at the first step: some rows halt at min_K
    at every position, others do not."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        model.halt.weight.copy_(0.3 * torch.randn(model.halt.weight.shape, generator=g))
        model.halt.bias.fill_(5.0)


def test_act_dropout_rows_do_not_couple_through_early_exit() -> None:
    """Training mode with dropout, fixed seed: row 0's output is the same next to a row that
    lets the whole batch halt at min_K as next to a row that keeps thinking. (A batch-wide early
    exit would run fewer core steps in the first case, so dropout would draw fewer random
    numbers and the upper blocks' masks, hence row 0's logits, would change.)"""
    model = tiny_model("act", K=4, min_K=1, dropout=0.1).train()
    _eager_halting(model)
    pool = _ids(batch=48, t=6, seed=1)

    def run(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(7)
        with torch.no_grad():
            logits = model(pool[rows]).logits
        return logits, model.last_steps.clone()

    found = None
    for a in range(len(pool)):
        _, steps = run([a, a])
        if not torch.all(steps[0] == 1):
            continue
        halting = [c for c in range(len(pool)) if torch.all(run([a, c])[1] == 1)]
        thinking = [c for c in range(len(pool)) if run([a, c])[1][1].max() > 1]
        if halting and thinking:
            found = a, halting[0], thinking[0]
            break
    assert found is not None, "no rows with the needed halting found; adjust _eager_halting"
    a, c_halt, c_think = found
    lo, steps_lo = run([a, c_halt])
    hi, steps_hi = run([a, c_think])
    assert steps_lo.max() == 1 < steps_hi.max()  # this batch could stop after 1 step, that one needs more
    assert torch.equal(steps_lo[0], steps_hi[0])
    assert (lo[0] - hi[0]).abs().max().item() <= 1e-6, "row 0 depends on how long row 1 thinks"
    for rows, collapsed in (([a, c_halt], 1.0), ([a, c_think], 0.0)):
        torch.manual_seed(7)
        with torch.no_grad():
            assert model(pool[rows]).aux["halting_collapsed"].item() == collapsed


@pytest.mark.parametrize("halting", ["act", "pondernet"])
def test_halting_collapse_is_flagged_and_has_no_gradient(halting: str) -> None:
    """When every position halts at min_K, aux reports halting_collapsed = 1 and the halting
    unit's gradient is exactly zero (R = 1: nothing depends on p); otherwise it is 0 and the
    unit gets a gradient."""
    ids = _ids(t=T + 1)
    for bias, collapsed in ((20.0, 1.0), (None, 0.0)):
        model = tiny_model("act", K=4, min_K=1, halting=halting, lambda_ponder=1.0).train()
        if bias is not None:
            with torch.no_grad():
                model.halt.bias.fill_(bias)
        out = model(ids[:, :-1], targets=ids[:, 1:])
        assert out.aux["halting_collapsed"].item() == collapsed
        out.loss.backward()
        grad = model.halt.weight.grad.abs().sum().item() + model.halt.bias.grad.abs().sum().item()
        assert (grad == 0.0) == (collapsed == 1.0), (bias, grad)
