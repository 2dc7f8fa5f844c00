"""The signed-decay chunked scan (unified/ops/signed_scan.py) against its step recurrence, and the
`ssm` option decay_range="signed" (Grazzi et al. 2025) under the registry's property tests."""
from __future__ import annotations

import pytest
import torch

import helpers
import test_properties as props
from helpers import tiny_model
from unified.errors import ConfigError
from unified.ops.signed_scan import (segment_sums, signed_decay, signed_products, signed_scan, signed_scan_chunked,
                                     signed_scan_step)
from unified.ops.signed_scan_naive import scan_naive
from unified.ops.ssd_scan import ssd_chunked


def inputs(T: int, seed: int = 0, b: int = 2, H: int = 3, P: int = 4, N: int = 5, dtype=torch.float64):
    """Random scan inputs whose decays a = 2 exp(dt A) - 1 are about half negative."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g, dtype=dtype)
    dt = torch.rand(b, T, H, generator=g, dtype=dtype) * 2
    A = -torch.rand(H, generator=g, dtype=dtype) * 3 - 0.05
    B, C = torch.randn(b, T, N, generator=g, dtype=dtype), torch.randn(b, T, N, generator=g, dtype=dtype)
    h0 = torch.randn(b, H, P, N, generator=g, dtype=dtype)
    return x, dt, signed_decay(dt, A), B, C, h0


@pytest.mark.parametrize("T,chunk", [(1, 4), (7, 4), (8, 4), (9, 4), (37, 8), (64, 16), (50, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_step_recurrence_in_float64(T: int, chunk: int, with_state: bool) -> None:
    """Outputs and final state equal the step recurrence to < 1e-10 across chunk boundaries."""
    x, dt, a, B, C, h0 = inputs(T, seed=T)
    assert (a < 0).any() and (a > 0).any(), "the test must mix signs"
    init = h0 if with_state else None
    y, h = signed_scan_chunked(x, dt, a, B, C, chunk, init)
    ry, rh = scan_naive(x, dt, a, B, C, init)
    assert (y - ry).abs().max().item() < 1e-10
    assert (h - rh).abs().max().item() < 1e-10


def test_exact_zero_and_minus_one_decays() -> None:
    """a = 0 (a product that must vanish exactly) and a = -1 (pure sign flips) at chunk edges."""
    x, dt, a, B, C, h0 = inputs(24, seed=3)
    a = a.clone()
    a[:, 7], a[:, 8], a[:, 15:17] = 0.0, -1.0, -1.0
    y, h = signed_scan_chunked(x, dt, a, B, C, 8, h0)
    ry, rh = scan_naive(x, dt, a, B, C, h0)
    assert torch.isfinite(y).all()
    assert (y - ry).abs().max().item() < 1e-10 and (h - rh).abs().max().item() < 1e-10


def test_decoding_steps_and_split_prefill_match_one_pass() -> None:
    """Prefill in pieces (carrying the state) and then single steps equal one chunked pass."""
    x, dt, a, B, C, _ = inputs(30, seed=5)
    full, h_full = signed_scan_chunked(x, dt, a, B, C, 8)
    y1, h = signed_scan(x[:, :13], dt[:, :13], a[:, :13], B[:, :13], C[:, :13], 8)
    parts = [y1]
    for t in range(13, 30):
        y, h = signed_scan(x[:, t:t + 1], dt[:, t:t + 1], a[:, t:t + 1], B[:, t:t + 1], C[:, t:t + 1], 8, h)
        parts.append(y)
    assert (torch.cat(parts, dim=1) - full).abs().max().item() < 1e-10
    assert (h - h_full).abs().max().item() < 1e-10
    y_step, _ = signed_scan_step(x[:, 0], dt[:, 0], a[:, 0], B[:, 0], C[:, 0], torch.zeros_like(h))
    assert (y_step - full[:, 0]).abs().max().item() < 1e-12


def test_positive_decays_reduce_to_the_ssd_scan() -> None:
    """With a = exp(dt A) the signed scan is Mamba-2's SSD scan."""
    x, dt, _, B, C, h0 = inputs(29, seed=7)
    A = -torch.linspace(0.1, 2.0, 3, dtype=torch.float64)
    y, h = signed_scan_chunked(x, dt, torch.exp(dt * A), B, C, 8, h0)
    ry, rh = ssd_chunked(x, dt, A, B, C, 8, h0)
    assert (y - ry).abs().max().item() < 1e-10 and (h - rh).abs().max().item() < 1e-10


def test_gradients_match_the_recurrence() -> None:
    """Gradients with respect to every input (decays included) equal the step recurrence's."""
    args = [t.clone().requires_grad_(True) for t in inputs(19, seed=9)]
    y, h = signed_scan_chunked(*args[:5], 4, args[5])
    (y.square().sum() + h.sum()).backward()
    got = [t.grad.clone() for t in args]
    for t in args:
        t.grad = None
    ry, rh = scan_naive(*args[:5], args[5])
    (ry.square().sum() + rh.sum()).backward()
    for g, t in zip(got, args):
        assert (g - t.grad).abs().max().item() < 1e-9


def test_segment_products_are_causal_products() -> None:
    """Entry [i, j] of a block is prod a[j..i-1] (1 on the diagonal, 0 above), signs included."""
    a = torch.tensor([0.5, -2.0, -0.25, 3.0], dtype=torch.float64)
    P = signed_products(a)
    for i in range(5):
        for j in range(5):
            want = float(torch.prod(a[j:i])) if i >= j else 0.0
            assert abs(P[i, j].item() - want) < 1e-12, (i, j)
    assert torch.equal(segment_sums(torch.ones(3)), torch.tensor([[0., 0., 0.], [1., 0., 0.], [2., 1., 0.]]))


def test_a_signed_scan_can_represent_parity() -> None:
    """With a_t = 1 - 2 bit_t the state's sign is the running parity: what decays in [0, 1] cannot do."""
    bits = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.float64)
    T = len(bits)
    x, dt = torch.zeros(1, T, 1, 1, dtype=torch.float64), torch.ones(1, T, 1, dtype=torch.float64)
    ones = torch.ones(1, T, 1, dtype=torch.float64)
    y, _ = signed_scan_chunked(x, dt, (1 - 2 * bits).view(1, T, 1), ones, ones, 4, torch.ones(1, 1, 1, 1,
                                                                                         dtype=torch.float64))
    parity = torch.cumsum(bits, 0) % 2
    assert torch.equal(y.view(T), 1 - 2 * parity)


def test_fused_backend_is_refused_and_bad_names_are_config_errors() -> None:
    x, dt, a, B, C, _ = inputs(4)
    with pytest.raises(ConfigError, match="mamba_ssm"):
        signed_scan(x, dt, a, B, C, 4, backend="mamba_ssm")
    with pytest.raises(ConfigError, match="accepted"):
        signed_scan(x, dt, a, B, C, 4, backend="triton")
    with pytest.raises(ConfigError, match="decay_range"):
        tiny_model("ssm", decay_range="negative")


def test_bf16_autocast_keeps_the_scan_in_float32() -> None:
    """Under bf16 autocast the chunked scan still computes in float32 (error vs float64 ~ fp32)."""
    x, dt, a, B, C, h0 = inputs(33, seed=11, dtype=torch.float32)
    ref, _ = scan_naive(*(t.double() for t in (x, dt, a, B, C)), h0.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, h = signed_scan_chunked(x, dt, a, B, C, 8, h0)
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    assert (y.double() - ref).abs().max().item() < 1e-3 * ref.abs().max().item()


# ---- the ssm option ------------------------------------------------------------------------------
SIGNED = {**helpers.TINY_OVERRIDES["ssm"], "decay_range": "signed"}


@pytest.fixture
def signed_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the registry's property tests build `ssm` with signed decays."""
    monkeypatch.setitem(helpers.TINY_OVERRIDES, "ssm", SIGNED)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_signed_ssm_is_causal(signed_ssm, mode: str) -> None:
    props.test_causality("ssm", mode)


def test_signed_ssm_cache_equivalence(signed_ssm) -> None:
    props.test_cache_equivalence("ssm")


def test_signed_ssm_gradient_reach_determinism_and_bf16(signed_ssm) -> None:
    props.test_gradient_reach("ssm")
    props.test_determinism("ssm")
    props.test_targets_ignore_index("ssm")
    props.test_bf16_autocast_trains("ssm")


def test_signed_ssm_float64_cache_matches_full_pass() -> None:
    """The whole model in float64: prefill across chunk boundaries + decoding steps equal one pass
    to < 1e-10, and the decays really are signed."""
    model = tiny_model("ssm", **SIGNED).double().eval()
    ids = props._ids()
    with torch.no_grad():
        for layer in model.layers:  # every other head: dt ~ 0.5, -A = 8, so a ~ 2 e^-4 - 1 < 0
            layer.mixer.A_log.fill_(torch.log(torch.tensor(8.0)).item())
            layer.mixer.dt_bias[::2] = 0.5 + torch.log(-torch.expm1(torch.tensor(-0.5))).item()
        full = model(ids).logits
        cache = model.init_cache(ids.shape[0])
        parts = []
        for a, b in [(0, 11), *((t, t + 1) for t in range(11, props.T))]:
            out = model(ids[:, a:b], cache=cache)
            cache = out.cache
            parts.append(out.logits)
        mixer = model.layers[0].mixer
        decays = signed_decay(torch.nn.functional.softplus(mixer.dt_bias), -torch.exp(mixer.A_log))
    assert (torch.cat(parts, dim=1) - full).abs().max().item() < 1e-10
    assert (decays < -0.5).any() and (decays > 0).any(), decays


def test_results_metadata_names_the_signed_scan() -> None:
    from unified.models.ssm import kernel_backends

    assert kernel_backends(tiny_model("ssm", decay_range="signed"))["ssm_scan"] == "torch-signed-chunked"
    assert kernel_backends(tiny_model("ssm"))["ssm_scan"] == "torch-chunked"


def test_signed_and_unit_ssm_differ_only_in_the_scan() -> None:
    """Same weights, different decay range: different logits (the option is wired through)."""
    unit, signed = tiny_model("ssm"), tiny_model("ssm", decay_range="signed")
    signed.load_state_dict(unit.state_dict())
    ids = props._ids()
    with torch.no_grad():
        assert (unit(ids).logits - signed(ids).logits).abs().max() > 1e-4
