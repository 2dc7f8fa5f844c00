"""Tests of the SSM variants: the chunked SSD scan against the naive per-step recurrence of the
Mamba-2 equations (`unified.ops.ssd_naive`), the O(1) decoding step, backend dispatch, initialisation,
the ssm_mem layout and memory tokens, and the FLOPs / state accounting."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from helpers import TINY, tiny_model
from unified.errors import ConfigError
from unified.models.ssm import DT_MAX, DT_MIN, SSMBlock, kernel_backends, scan_backend
from unified.ops import ssd_scan
from unified.ops.ssd_naive import ssd_naive
from unified.ops.ssd_scan import ssd_chunked, ssd_step


def random_inputs(T: int, seed: int, b: int = 2, H: int = 3, P: int = 4, N: int = 5):
    """Random SSD inputs with realistic ranges: -A in [1, 16], dt from softplus (0 .. ~3)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g)
    dt = torch.nn.functional.softplus(2 * torch.randn(b, T, H, generator=g) - 2)
    A = -torch.empty(H).uniform_(0, math.log(16), generator=g).exp()
    A[0] = -0.01  # one slowly decaying head, so the state carries far across chunks
    B, C = torch.randn(b, T, N, generator=g), torch.randn(b, T, N, generator=g)
    h0 = torch.randn(b, H, P, N, generator=g)
    return x, dt, A, B, C, h0


@pytest.mark.parametrize("T", [1, 5, 8, 13, 16, 40, 67])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_matches_naive_recurrence(T: int, with_state: bool) -> None:
    """Chunked scan (chunk 8, so most lengths leave a ragged last chunk) == the per-step
    recurrence in float64, to 1e-4 in float32, outputs and final state."""
    x, dt, A, B, C, h0 = random_inputs(T, seed=T)
    init = h0 if with_state else None
    ref_y, ref_h = ssd_naive(*(t.double() for t in (x, dt, A, B, C)), None if init is None else init.double())
    y, h = ssd_chunked(x, dt, A, B, C, chunk_size=8, initial_state=init)
    assert y.shape == x.shape and y.dtype == torch.float32 and h.shape == h0.shape
    assert (y.double() - ref_y).abs().max().item() <= 1e-4
    assert (h.double() - ref_h).abs().max().item() <= 1e-4


def test_chunk_size_does_not_change_the_result() -> None:
    """Chunk length 1, 7, 8, T and > T give the same outputs."""
    x, dt, A, B, C, h0 = random_inputs(29, seed=3)
    ref, _ = ssd_chunked(x, dt, A, B, C, chunk_size=8, initial_state=h0)
    for L in (1, 7, 29, 64):
        y, _ = ssd_chunked(x, dt, A, B, C, chunk_size=L, initial_state=h0)
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_step_matches_chunked() -> None:
    """The O(1) decoding step, applied token by token, equals the chunked scan."""
    x, dt, A, B, C, h0 = random_inputs(21, seed=5)
    y_ref, h_ref = ssd_chunked(x, dt, A, B, C, chunk_size=8, initial_state=h0)
    h, ys = h0, []
    for t in range(x.shape[1]):
        y, h = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], h)
        ys.append(y)
    assert (torch.stack(ys, 1) - y_ref).abs().max().item() <= 1e-4
    assert (h - h_ref).abs().max().item() <= 1e-4


def test_chunked_gradients_match_naive() -> None:
    """Backward through the chunked scan gives the recurrence's gradients (no NaN from the mask)."""
    inputs = [t.double().requires_grad_() for t in random_inputs(19, seed=7)]
    ref_y, ref_h = ssd_naive(*inputs)
    g_ref = torch.autograd.grad((ref_y.sin().sum() + ref_h.sum()), inputs)
    y, h = ssd_chunked(*inputs[:5], chunk_size=8, initial_state=inputs[5])
    g = torch.autograd.grad((y.sin().sum() + h.sum()), inputs)
    for name, a, r in zip("x dt A B C h0".split(), g, g_ref):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-6, msg=lambda m: f"d{name}: {m}")


def test_cpu_never_uses_mamba_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the dispatcher neither imports nor calls the fused kernels, even when they would
    import; a CUDA device would get them (scan and conv backends both reported)."""
    calls = []

    def fake_import():
        calls.append(1)
        return ssd_scan.FusedKernels(*(lambda *a, **k: None,) * 4)

    monkeypatch.setattr(ssd_scan, "_import_kernels", fake_import)
    assert scan_backend("cpu") == "torch-chunked"
    assert kernel_backends("cpu") == {"ssm_scan": "torch-chunked", "conv1d": "torch"}
    model = tiny_model("ssm")
    model(torch.randint(0, TINY["vocab_size"], (1, 12)))
    assert kernel_backends(model) == {"ssm_scan": "torch-chunked", "conv1d": "torch"}
    assert calls == []
    assert scan_backend("cuda") == "mamba_ssm" and calls == [1]
    assert kernel_backends("cuda") == {"ssm_scan": "mamba_ssm", "conv1d": "causal_conv1d"}


def test_kernel_backends_of_models_without_ssm_layers() -> None:
    """A model without Mamba-2 layers reports "none" for both (nothing of the kind runs)."""
    assert kernel_backends(tiny_model("baseline")) == {"ssm_scan": "none", "conv1d": "none"}
    assert kernel_backends(tiny_model("ssm_mem"))["ssm_scan"] == "torch-chunked"


def test_conv_kernel_limits() -> None:
    """causal-conv1d takes widths 2..4 and (with states) channels divisible by 8; otherwise the
    PyTorch conv runs even where the kernel is installed."""
    assert ssd_scan.conv_kernel_fits(80, 4) and ssd_scan.conv_kernel_fits(16, 2)
    assert not ssd_scan.conv_kernel_fits(80, 5) and not ssd_scan.conv_kernel_fits(84, 4)
    assert not ssd_scan.conv_kernel_fits(80, 1)


@pytest.mark.parametrize("fn", ["chunked", "step"])
def test_scan_is_float32_under_bf16_autocast(fn: str) -> None:
    """Under bf16 autocast the scan's products still run in float32 (issue 14: they ran in bf16,
    relative error 7.8e-3): the result equals the float32 scan without autocast to float32
    rounding, and the state comes back float32."""
    x, dt, A, B, C, h0 = random_inputs(37, seed=11, H=4, P=8, N=16)
    if fn == "chunked":
        def run():
            return ssd_chunked(x, dt, A, B, C, chunk_size=8, initial_state=h0)
    else:
        def run():
            return ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], h0)
    ref_y, ref_h = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, h = run()
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    rel = ((y - ref_y).norm() / ref_y.norm()).item()
    assert rel < 1e-6, f"relative error {rel:.1e}: the scan ran in reduced precision"
    assert ((h - ref_h).norm() / ref_h.norm()).item() < 1e-6


def test_model_cache_state_stays_float32_under_bf16_autocast() -> None:
    """Prefill and decoding steps under bf16 autocast keep every cached SSM state in float32."""
    model = tiny_model("ssm").eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 11))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.init_cache(2)
        out = model(ids[:, :9], cache=cache)
        for t in (9, 10):
            out = model(ids[:, t:t + 1], cache=out.cache)
    assert all(s.dtype == torch.float32 for s in out.cache.ssm)
    assert torch.isfinite(out.logits).all()


def test_backend_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan backend is announced on the "unified" logger once, not on every call."""
    monkeypatch.setattr(ssd_scan, "_LOGGED", set())
    model = tiny_model("ssm")
    ids = torch.randint(0, TINY["vocab_size"], (1, 12))
    with caplog.at_level(logging.INFO, logger="unified"):
        model(ids)
        model(ids)
    lines = [r.getMessage() for r in caplog.records if r.name == "unified" and "scan backend" in r.getMessage()]
    assert lines == ["SSD scan backend: torch-chunked (device cpu)"]


def test_initialisation_ranges() -> None:
    """-A in [1, 16], softplus(dt_bias) in [dt_min, dt_max], D = 1, per head."""
    model = tiny_model("ssm", init_seed=3)
    for layer in model.layers:
        m = layer.mixer
        A = -torch.exp(m.A_log)
        assert ((-A >= 1.0) & (-A <= 16.0)).all()
        dt = torch.nn.functional.softplus(m.dt_bias)
        assert ((dt >= DT_MIN * 0.999) & (dt <= DT_MAX * 1.001)).all()
        assert torch.equal(m.D, torch.ones_like(m.D))
        assert m.A_log.unique().numel() == m.A_log.numel()  # random, not constant


def test_chunk_size_override_is_exact() -> None:
    """chunk_size is read at forward time and changes speed only, not the logits."""
    model = tiny_model("ssm").eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 40))
    with torch.no_grad():
        ref = model(ids).logits
        model.apply_overrides(chunk_size=64)
        torch.testing.assert_close(model(ids).logits, ref, atol=1e-5, rtol=1e-4)


def test_ssm_mem_layout_and_memory_tokens() -> None:
    """Attention every attn_period layers; the memory tokens change the logits, are cached on
    the first call (their keys/values in the KV cache) and are not prepended again."""
    model = tiny_model("ssm_mem", n_layers=4, attn_period=2, n_mem_tokens=3).eval()
    assert model.kinds == ["ssm", "attn", "ssm", "attn"] and model.attention_layers() == 2
    ids = torch.randint(0, TINY["vocab_size"], (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        assert full.shape == (2, 10, TINY["vocab_size"])
        cache = model.init_cache(2)
        model(ids[:, :4], cache=cache)
        assert cache.pos == 3 + 4 and cache.kv.pos == 3 + 4
        model(ids[:, 4:5], cache=cache)
        assert cache.kv.pos == 3 + 5
        model.mem.add_(torch.randn_like(model.mem))
        assert (model(ids).logits - full).abs().max() > 1e-4


def test_bad_options_are_config_errors() -> None:
    """Inconsistent options raise one ConfigError naming the problem."""
    with pytest.raises(ConfigError, match="headdim"):
        tiny_model("ssm", headdim=7)
    with pytest.raises(ConfigError, match="attn_period"):
        tiny_model("ssm_mem", attn_period=3)
    with pytest.raises(ConfigError, match="d_state"):
        tiny_model("ssm", d_state=0)


def test_state_size_and_flops() -> None:
    """SSM state is constant in length; ssm_mem adds KV that grows with it; FLOPs follow the
    documented formula."""
    model = tiny_model("ssm")
    m = model.layers[0].mixer
    per_layer = 3 * m.conv_dim + m.n_heads * 8 * 8  # (d_conv - 1) conv_dim + H P N
    assert model.state_size(10) == model.state_size(1000) == 2 * per_layer
    cache = model.init_cache(1)
    assert cache.floats_per_sequence() == model.state_size()
    E, N, L = m.d_inner, 8, 8
    expect = 6 * model.matmul_params() + 2 * 6 * (L * (N + E) + 2 * E * N)
    assert model.flops_per_token(40) == pytest.approx(expect)
    hybrid = tiny_model("ssm_mem")
    assert hybrid.state_size(1000) - hybrid.state_size(10) == 2 * 1 * TINY["d_model"] * 990
    with torch.no_grad():
        cache = hybrid.init_cache(1)
        hybrid(torch.zeros(1, 10, dtype=torch.long), cache=cache)
    assert cache.floats_per_sequence() == hybrid.state_size(10)


def test_ssm_blocks_have_mlp_option() -> None:
    """mlp=False gives pure Mamba-2 blocks (fewer parameters, still a working model)."""
    with_mlp, without = tiny_model("ssm"), tiny_model("ssm", mlp=False)
    assert all(isinstance(b, SSMBlock) and b.ffn is None for b in without.layers)
    assert without.num_params() < with_mlp.num_params()
    ids = torch.randint(0, TINY["vocab_size"], (1, 9))
    assert torch.isfinite(without(ids, targets=ids).loss)
