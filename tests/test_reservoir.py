"""Reservoir variants (`reservoir` tanh / linear, `liquid`): spectral radius, frozen weights,
linear parallel scan == its step recurrence, determinism, and the property checks for the
non-default modes (the shared property tests only build the default tanh mode)."""
from __future__ import annotations

import io
import math

import pytest
import torch

from helpers import TINY, tiny_model
from unified.errors import ConfigError, UnknownNameError
from unified.models import create_model
from unified.models.reservoir import frozen_generator, sparse_recurrent_matrix, spectral_radius
from unified.ops.linear_scan import linear_chunked_scan

MODES = [dict(reservoir_mode="tanh"), dict(reservoir_mode="linear"), dict(reservoir_mode="tanh", leak_rate=0.6),
         dict(reservoir_mode="linear", leak_rate=0.6)]


def _ids(batch: int = 2, t: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (batch, t), generator=g)


def _frozen(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("mode", ["tanh", "linear"])
@pytest.mark.parametrize("radius", [0.9, 0.5])
def test_spectral_radius(mode: str, radius: float) -> None:
    """Every layer's recurrent matrix has true spectral radius = the configured value (1%)."""
    model = tiny_model("reservoir", reservoir_mode=mode, spectral_radius=radius, n_layers=3)
    for block in model.blocks:
        rho = spectral_radius(block.reservoir.recurrent_matrix())
        assert abs(rho - radius) <= 0.01 * radius, f"{mode}: spectral radius {rho:.4f} != {radius}"


def test_linear_and_tanh_share_the_seeded_matrix() -> None:
    """The linear mode's eigen-data rebuild the same W as the tanh mode (and as a fresh draw)."""
    tanh, lin = tiny_model("reservoir", reservoir_mode="tanh"), tiny_model("reservoir", reservoir_mode="linear")
    for i, (bt, bl) in enumerate(zip(tanh.blocks, lin.blocks)):
        w = sparse_recurrent_matrix(frozen_generator(0, i, 1), bt.reservoir.w.shape[0], tanh.opts.sparsity)
        w = w * (0.9 / spectral_radius(w))
        torch.testing.assert_close(bt.reservoir.recurrent_matrix(), w, atol=1e-6, rtol=0)
        torch.testing.assert_close(bl.reservoir.recurrent_matrix(), w, atol=1e-4, rtol=0)
        assert (w == 0).float().mean() > 0.8, "recurrent matrix is not sparse"


@pytest.mark.parametrize("variant,opts", [("reservoir", MODES[0]), ("reservoir", MODES[3]), ("liquid", {})])
def test_frozen_weights_unchanged_by_training(variant: str, opts: dict) -> None:
    """Frozen weights are bit-identical after AdamW steps over the trainable parameters (as the
    training loop builds it), while trainable weights move; counts and state_dict include them."""
    model = tiny_model(variant, **opts).train()
    before, trainable_before = _frozen(model), {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before and model.num_frozen_params() == sum(t.numel() for t in before.values())
    assert model.num_params() == model.num_params(trainable_only=True) + model.num_frozen_params()
    assert set(before) <= set(model.state_dict())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ids = _ids(t=41)
    for _ in range(4):
        opt.zero_grad()
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        opt.step()
    for name, value in _frozen(model).items():
        assert torch.equal(value, before[name]), f"frozen {name} changed during training"
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])]
    assert len(moved) == len(trainable_before)


@pytest.mark.parametrize("variant,opts", [("reservoir", MODES[0]), ("reservoir", MODES[1]), ("liquid", {})])
def test_frozen_weights_reproducible_from_seed(variant: str, opts: dict) -> None:
    """Frozen weights depend on (init_seed, layer) only: not on the global RNG, other options
    that change trainable shapes, or the number of layers; another seed gives other weights."""
    a = _frozen(tiny_model(variant, **opts))
    torch.manual_seed(1234)
    torch.randn(1000)
    extra = {"readout_hidden": 7} if variant == "reservoir" else {"d_ff": 24}
    b = _frozen(tiny_model(variant, n_layers=3, dropout=0.1, **extra, **opts))
    c = _frozen(tiny_model(variant, init_seed=1, **opts))
    for name, value in a.items():
        assert torch.equal(value, b[name]), f"{name} depends on something besides the seed"
        assert not torch.equal(value, c[name]), f"{name} ignores init_seed"


def test_frozen_weights_saved_in_checkpoint() -> None:
    """A state_dict round trip (weights_only load) restores the frozen weights of another seed."""
    a, b = tiny_model("reservoir", reservoir_mode="linear"), tiny_model("reservoir", reservoir_mode="linear", init_seed=3)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for name, value in _frozen(a).items():
        assert torch.equal(value, _frozen(b)[name])
    ids = _ids()
    assert torch.equal(a(ids).logits, b(ids).logits)


@pytest.mark.parametrize("leak", [1.0, 0.6])
@pytest.mark.parametrize("chunk", [1, 16, 64])
def test_linear_parallel_equals_step_recurrence(leak: float, chunk: int) -> None:
    """The chunked parallel scan equals its own step-by-step recurrence within 1e-5, over 3
    chunk boundaries and a partial last chunk, from a nonzero initial state."""
    res = tiny_model("reservoir", reservoir_mode="linear", spectral_radius=0.99).blocks[0].reservoir
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 57, res.lam.shape[0], generator=g)
    y0 = torch.randn(2, res.lam.shape[0], generator=g)
    ys, last = linear_chunked_scan(v, y0, res.leaky_lam(leak), chunk)
    y, steps = y0, []
    for t in range(v.shape[1]):
        y = res.step(v[:, t], y, leak)
        steps.append(y)
    torch.testing.assert_close(ys, torch.stack(steps, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(last, y, atol=1e-5, rtol=0)


def test_linear_mode_equals_real_recurrence() -> None:
    """States x = P y of the diagonalised layer match the plain recurrence x_t = W x_{t-1} +
    W_in u_t with the seeded float64 W (checks the eigenbasis change end to end)."""
    model = tiny_model("reservoir", reservoir_mode="linear")
    res, n, d = model.blocks[0].reservoir, model.opts.reservoir_size, TINY["d_model"]
    gen = frozen_generator(0, 0, 1)
    w = sparse_recurrent_matrix(gen, n, model.opts.sparsity)
    w = w * (0.9 / spectral_radius(w))
    w_in = torch.randn(n, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    u = torch.randn(2, 45, d, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        xs, _ = res(u, torch.zeros(2, n), model.opts)
    x, ref = torch.zeros(2, n, dtype=torch.float64), []
    for t in range(u.shape[1]):
        x = x @ w.T + u[:, t].double() @ w_in.T
        ref.append(x)
    ref = torch.stack(ref, 1)
    assert (xs.double() - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("opts", MODES[1:], ids=["linear", "tanh-leaky", "linear-leaky"])
def test_other_modes_causal_and_cache_equivalent(opts: dict) -> None:
    """The shared causality and cache checks for the modes the property tests do not build."""
    model = tiny_model("reservoir", **opts).eval()
    ids = _ids()
    with torch.no_grad():
        full = model(ids).logits
        for t in (0, 7, 8, 23, 38):
            changed = ids.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] + 1) % TINY["vocab_size"]
            out = model(changed).logits
            assert (out[:, : t + 1] - full[:, : t + 1]).abs().max() <= 1e-6
            assert (out[:, t + 1:] - full[:, t + 1:]).abs().max() > 0
        for splits in ([0] + list(range(1, 41)), [0, 5, 17, 18, 33, 40]):
            cache, parts = model.init_cache(2), []
            for a, b in zip(splits[:-1], splits[1:]):
                out = model(ids[:, a:b], cache=cache)
                cache = out.cache
                parts.append(out.logits)
            torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)
        assert cache.pos == 40


def test_gradient_reaches_linear_mode() -> None:
    """Every trainable parameter of the linear mode gets a finite nonzero gradient."""
    model = tiny_model("reservoir", reservoir_mode="linear").train()
    ids = _ids(t=41)
    model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == (not p.requires_grad), name
        if p.requires_grad:
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_chunk_size_override_keeps_logits() -> None:
    """chunk_size is evaluation-overridable and read at forward time: same logits (1e-5)."""
    model = tiny_model("reservoir", reservoir_mode="linear").eval()
    ids = _ids()
    with torch.no_grad():
        a = model(ids).logits
        model.apply_overrides(chunk_size=32)
        b = model(ids).logits
    assert model.opts.chunk_size == 32
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError):
        model.apply_overrides(leak_rate=0.5)


def test_liquid_ripple_uses_absolute_position() -> None:
    """The time-aware reservoir's output depends on the absolute position it is told."""
    block = tiny_model("liquid").blocks[0].reservoir
    u = torch.randn(1, 4, TINY["d_model"])
    with torch.no_grad():
        assert not torch.allclose(block(u, 0, 0.1), block(u, 5, 0.1))
        torch.testing.assert_close(block(u, 0, 0.1)[:, 2:], block(u[:, 2:], 2, 0.1))
        torch.testing.assert_close(block(u, 0, 0.0), block(u, 9, 0.0))


@pytest.mark.parametrize("mode", ["tanh", "linear"])
def test_meta_build_counts(mode: str) -> None:
    """Large scales build on meta (no eigendecomposition) with the expected frozen count."""
    model = create_model("reservoir", "1B", device="meta", reservoir_mode=mode)
    n, d, layers = model.opts.reservoir_size, model.cfg.d_model, model.cfg.n_layers
    assert n == 2 * d
    per_layer = n * n + n * d + (2 * n if mode == "linear" else 0)
    assert model.num_frozen_params() == layers * per_layer
    assert model.state_size() == layers * n
    liquid = create_model("liquid", "1B", device="meta")
    assert liquid.num_frozen_params() == layers * (liquid.opts.reservoir_size * (d + 2))


def test_bad_options_are_clear_errors() -> None:
    """Unknown modes and out-of-range settings raise UnifiedError subclasses naming the option."""
    with pytest.raises(UnknownNameError, match="reservoir_mode"):
        tiny_model("reservoir", reservoir_mode="relu")
    for bad in (dict(leak_rate=0.0), dict(sparsity=1.0), dict(spectral_radius=-1.0), dict(chunk_size=0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            tiny_model("reservoir", **bad)
    with pytest.raises(ConfigError, match="sparsity"):
        tiny_model("liquid", sparsity=1.5)


def test_eigen_slots_pair_conjugates() -> None:
    """Slot pairs (2k, 2k+1) hold a conjugate pair or two real eigenvalues (the static partner
    layout the scan relies on); an odd linear reservoir is refused."""
    lam = tiny_model("reservoir", reservoir_mode="linear").blocks[0].reservoir.lam.detach().view(-1, 2, 2)
    conj = (lam[:, 0, 0] == lam[:, 1, 0]) & (lam[:, 0, 1] == -lam[:, 1, 1]) & (lam[:, 1, 1] > 0)
    real = (lam[:, :, 1] == 0).all(dim=1)
    assert bool((conj | real).all()) and bool(conj.any()) and bool(real.any())
    with pytest.raises(ConfigError, match="even"):
        tiny_model("reservoir", reservoir_mode="linear", reservoir_size=47)


def test_fused_rnn_kernel_equals_loop() -> None:
    """The fused RNN call used on CUDA (leak 1) equals the loop used elsewhere (checked on CPU)."""
    from unified.ops.tanh_scan import fused_rnn_tanh, tanh_scan

    res = tiny_model("reservoir").blocks[0].reservoir
    u, h0 = torch.randn(2, 19, TINY["d_model"]), torch.randn(2, res.w.shape[0])
    ref, ref_last = tanh_scan(torch.nn.functional.linear(u, res.w_in), h0, res.w, 1.0)
    out, last = fused_rnn_tanh(u, h0, res.w_in, res.w)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(last, ref_last, atol=1e-5, rtol=0)


@pytest.mark.parametrize("opts", MODES)
def test_scans_run_in_float32_under_bf16_autocast(opts: dict) -> None:
    """Both reservoir recurrences (drive, scan and state readout) ignore bf16 autocast: their
    states equal the float32 ones to 1e-5 relative, and are float32."""
    model = tiny_model("reservoir", **opts)
    res = model.blocks[0].reservoir
    u = torch.randn(2, 40, TINY["d_model"], generator=torch.Generator().manual_seed(3))
    h0 = torch.randn(2, model.opts.reservoir_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, ref_last = res(u, h0, model.opts)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, last = res(u, h0, model.opts)
    assert got.dtype == last.dtype == torch.float32
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (last - ref_last).abs().max() <= 1e-5 * ref_last.abs().max()
    if opts["reservoir_mode"] == "linear":  # the bare scan under autocast (what forward used to run) is far off
        v, lam = res.drive(u, model.opts.leak_rate), res.leaky_lam(model.opts.leak_rate)
        with torch.no_grad():
            y32, _ = linear_chunked_scan(v, h0, lam, 8)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y16, _ = linear_chunked_scan(v, h0, lam, 8)
        assert (y16 - y32).abs().max() > 1e-4 * y32.abs().max(), "autocast does not reach the scan: vacuous test"
