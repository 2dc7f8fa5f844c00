"""The small-model step's speed paths (issue 20) compute what the plain paths compute: attention
through SDPA's math backend under the oneDNN float32 matmul setting, and the fused AdamW that
`configure_optimizer` picks on CPU. No timing here (bench/RESULTS.md holds the measurements)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from unified.models import create_model
from unified.models import layers


@contextlib.contextmanager
def matmul_precision(setting: str):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(setting)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def attention_and_grads(q, k, v, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = layers.attend(*leaves, **kw)  # (clone keeps the transposed layout)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return (out.detach(), *(t.grad for t in leaves))


@pytest.mark.parametrize("kw, kv_heads", [({}, 4), ({}, 2), ({"window": 5}, 4), ({"prefix": 3}, 4),
                                          ({"q_start": 6}, 4)])
def test_attention_under_medium_equals_the_flash_path(kw: dict, kv_heads: int) -> None:
    g = torch.Generator().manual_seed(0)
    T = 12
    S = T + kw.get("prefix", 0) + kw.get("q_start", 0)
    q = torch.randn(2, 4, T, 8, generator=g)  # k, v: transposed views, as the model's split of fused QKV gives
    k, v = (torch.randn(2, S, kv_heads, 8, generator=g).transpose(1, 2) for _ in range(2))
    with matmul_precision("highest"):
        assert isinstance(layers._sdpa_backend(q, S), contextlib.nullcontext)
        ref = attention_and_grads(q, k, v, **kw)
    with matmul_precision("medium"):
        assert not isinstance(layers._sdpa_backend(q, S), contextlib.nullcontext)  # the math backend
        assert isinstance(layers._sdpa_backend(q, layers._MATH_ATTENTION_MAX_PAIRS), contextlib.nullcontext)
        assert isinstance(layers._sdpa_backend(q.double(), S), contextlib.nullcontext)
        got = attention_and_grads(q, k, v, **kw)
        assert torch.get_float32_matmul_precision() == "medium"  # (restored after forward and backward)
    exact = not kw and kv_heads == 4  # the flash kernel under "highest": the very same numbers
    for a, b in zip(got, ref):
        if exact:
            assert torch.equal(a, b)
        else:  # SDPA's math backend
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


def test_configure_optimizer_is_fused_on_cpu_and_steps_like_the_loop() -> None:
    models = [create_model("baseline", "pico", vocab_size=32, n_layers=1, d_model=16, n_heads=2) for _ in range(2)]
    fused = models[0].configure_optimizer(lr=1e-2, weight_decay=0.1)
    loop = models[1].configure_optimizer(lr=1e-2, weight_decay=0.1, fused=False)
    assert fused.defaults["fused"] is True and loop.defaults["fused"] is False
    assert [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]
    x = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for m, opt in zip(models, (fused, loop)):
            m(x[:, :-1], targets=x[:, 1:]).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any((a - p0).abs().max() > 1e-4 for a, p0 in
               zip(models[0].parameters(), create_model("baseline", "pico", vocab_size=32, n_layers=1, d_model=16,
                                                        n_heads=2).parameters()))
