"""DESIGN contract 1: property tests run over every registered variant.

Registering a variant puts it under these tests automatically: causality, cache equivalence,
gradient reach, determinism, and that every named scale builds on the meta device.
"""
from __future__ import annotations

import pytest
import torch

from conftest import TINY, tiny_model
from unified.config import SCALES
from unified.model import create_model, variant_names

VARIANTS = variant_names()
T = 40  # crosses the chunk/window sizes the tiny overrides set


def _ids(batch: int = 2, t: int = T, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], (batch, t), generator=g)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(variant: str, mode: str) -> None:
    """Changing token t+k changes no logit at positions <= t, and no other batch row."""
    torch.manual_seed(0)
    model = tiny_model(variant, dropout=0.0)
    model.train(mode == "train")
    ids = _ids()
    with torch.no_grad():
        torch.manual_seed(1)
        base = model(ids).logits
        for t in (0, 7, 8, 15, 16, 23, 31, T - 2):
            changed = ids.clone()
            changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.arange(T - t - 1)) % TINY["vocab_size"]
            torch.manual_seed(1)
            out = model(changed).logits
            diff = (out[:, : t + 1] - base[:, : t + 1]).abs().max().item()
            assert diff <= 1e-6, f"{variant}: position <= {t} sees the future (max diff {diff:.2e})"
            assert (out[:, t + 1:] - base[:, t + 1:]).abs().max() > 0, "test did not change the input"
        other = ids.clone()
        other[1] = (other[1] + 3) % TINY["vocab_size"]
        torch.manual_seed(1)
        out = model(other).logits
        assert (out[0] - base[0]).abs().max().item() <= 1e-6, f"{variant}: batch rows mix"


@pytest.mark.parametrize("variant", VARIANTS)
def test_cache_equivalence(variant: str) -> None:
    """Full forward == prefill + chunked + step-by-step decoding with the cache."""
    model = tiny_model(variant).eval()
    ids = _ids()
    with torch.no_grad():
        full = model(ids).logits
        for splits in ([0] + list(range(1, T + 1)), [0, 9] + list(range(10, T + 1)), [0, 5, 17, 18, 33, T]):
            cache = model.init_cache(ids.shape[0])
            parts = []
            for a, b in zip(splits[:-1], splits[1:]):
                out = model(ids[:, a:b], cache=cache)
                cache = out.cache
                parts.append(out.logits)
            step = torch.cat(parts, dim=1)
            torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4,
                                       msg=lambda m: f"{variant} splits {splits[:4]}...: {m}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_reach(variant: str) -> None:
    """One backward pass gives every trainable parameter a finite, non-zero gradient."""
    model = tiny_model(variant).train()
    ids = _ids(t=T + 1)
    out = model(ids[:, :-1], targets=ids[:, 1:])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"{variant}: frozen {name} got a gradient"
            continue
        assert p.grad is not None, f"{variant}: {name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{variant}: {name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{variant}: {name} has an all-zero gradient"
    for key, value in out.aux.items():
        assert torch.as_tensor(value).numel() == 1, f"aux {key} is not a scalar"


@pytest.mark.parametrize("variant", VARIANTS)
def test_determinism(variant: str) -> None:
    """Same init_seed -> identical weights and loss; another seed -> different weights."""
    a, b, c = tiny_model(variant), tiny_model(variant), tiny_model(variant, init_seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    ids = _ids(t=T + 1)
    la = a(ids[:, :-1], targets=ids[:, 1:]).loss
    lb = b(ids[:, :-1], targets=ids[:, 1:]).loss
    assert torch.equal(la, lb)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_scale_builds_on_meta(variant: str) -> None:
    """Every named size builds without memory and reports a parameter count."""
    counts = {}
    for size in SCALES:
        model = create_model(variant, size, device="meta")
        counts[size] = model.num_params()
        assert counts[size] > 0
        assert model.num_params(trainable_only=True) > 0
        assert model.flops_per_token(model.cfg.max_seq_len) > 0
    assert counts["pico"] < counts["micro"] < counts["nano"] < counts["125M"] < counts["1B"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_targets_ignore_index(variant: str) -> None:
    """Targets of -100 are ignored: a loss over only masked positions equals the unmasked subset."""
    model = tiny_model(variant).eval()
    ids = _ids(t=T + 1)
    targets = ids[:, 1:].clone()
    targets[:, :20] = -100
    with torch.no_grad():
        out = model(ids[:, :-1], targets=targets)
        ce = torch.nn.functional.cross_entropy(out.logits[:, 20:].reshape(-1, out.logits.shape[-1]),
                                               ids[:, 21:].reshape(-1))
    aux_loss = float(out.aux.get("aux_loss", 0.0))
    assert abs(out.loss.item() - aux_loss - ce.item()) < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_autocast_trains(variant: str) -> None:
    """Forward and backward under bf16 autocast (train.py --dtype bf16) give a finite loss and
    finite gradients: mixed bf16/fp32 tensors inside a variant must not crash."""
    model = tiny_model(variant).train()
    ids = _ids(t=T + 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids[:, :-1], targets=ids[:, 1:])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
