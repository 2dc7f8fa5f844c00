"""docs/design.md#contract-1: property tests run over every registered variant.

Registering a variant puts it under these tests automatically: causality, cache equivalence,
gradient reach, determinism, and that every named scale builds on the meta device.
"""
from __future__ import annotations

import pytest
import torch

from helpers import TINY, tiny_model
from unified.models import create_model, variant_names
from unified.models.config import SCALES
from unified.models.properties import cached_logits, causality_diffs, default_splits

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
    res = causality_diffs(model, _ids(), (0, 7, 8, 15, 16, 23, 31, T - 2), seed=1)
    for t, diff in res["past"].items():
        assert diff <= 1e-6, f"{variant}: position <= {t} sees the future (max diff {diff:.2e})"
        assert res["future"][t] > 0, "test did not change the input"
    assert res["rows"] <= 1e-6, f"{variant}: batch rows mix"


@pytest.mark.parametrize("variant", VARIANTS)
def test_cache_equivalence(variant: str) -> None:
    """Full forward == prefill + chunked + step-by-step decoding with the cache."""
    model = tiny_model(variant).eval()
    ids = _ids()
    with torch.no_grad():
        full = model(ids).logits
        for splits in default_splits(T):
            step = cached_logits(model, ids, splits)
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_parts_are_separate(variant: str) -> None:
    """LMOutput carries the cross-entropy and the auxiliary loss apart: `ce_loss` is the mean
    next-token cross-entropy of the supervised targets, `token_ce` is per position (0 where
    ignored), and `loss` = ce_loss + aux_loss exactly (ce_loss alone without an aux loss)."""
    model = tiny_model(variant, **({"lambda_ponder": 5.0} if variant == "act" else {})).eval()
    ids = _ids(t=T + 1)
    targets = ids[:, 1:].clone()
    targets[0, :13] = -100
    with torch.no_grad():
        out = model(ids[:, :-1], targets=targets)
    keep = targets != -100
    ref = torch.nn.functional.cross_entropy(out.logits[keep].float(), targets[keep])
    assert out.ce_loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.token_ce.shape == targets.shape and torch.all(out.token_ce[~keep] == 0)
    assert (out.token_ce.sum() / keep.sum()).item() == pytest.approx(out.ce_loss.item(), rel=1e-6)
    if variant == "act":
        assert out.aux_loss is not None and out.aux_loss.item() > 1.0  # the large ponder weight
        assert torch.equal(out.loss, out.ce_loss + out.aux_loss)
        assert out.aux["aux_loss"].item() == out.aux_loss.item()
    else:
        assert out.aux_loss is None and torch.equal(out.loss, out.ce_loss)
    assert model(ids[:, :-1]).ce_loss is None  # no targets, no loss


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_mode_dropout_keeps_rows_independent(variant: str) -> None:
    """With dropout in training mode and a fixed seed, changing one batch row leaves every
    other row's output unchanged: no batch-wide decision (e.g. an early exit) changes how many
    random numbers dropout draws for the others."""
    model = tiny_model(variant, dropout=0.2).train()
    ids = _ids(batch=3)
    other = ids.clone()
    other[1] = (other[1] * 7 + 3) % TINY["vocab_size"]
    with torch.no_grad():
        torch.manual_seed(5)
        base = model(ids).logits
        torch.manual_seed(5)
        out = model(other).logits
        torch.manual_seed(6)
        reseeded = model(ids).logits
    assert (reseeded[0] - base[0]).abs().max() > 0, "dropout is not active: the test would be vacuous"
    for row in (0, 2):
        assert (out[row] - base[row]).abs().max().item() <= 1e-6, f"{variant}: row {row} depends on row 1"


def _is_decay_exempt(name: str) -> bool:
    """Parameter names the decay rule must exclude, by the class of thing they are."""
    leaf = name.rsplit(".", 1)[-1]
    return (leaf == "bias" or leaf in ("A_log", "dt_bias", "D", "mem", "mem_init", "gate")
            or leaf.startswith(("g_", "b_")) or "norm" in name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_weight_decay_reaches_linear_and_embedding_matrices_only(variant: str) -> None:
    """The one optimizer constructor decays exactly the >= 2-D weights of nn.Linear and
    nn.Embedding layers: no norm gain, bias, gate, memory token / initial memory, SSM per-head
    scalar, conv kernel or frozen weight; every trainable parameter is in exactly one group."""
    import torch.nn as nn

    model = tiny_model(variant)
    owners = {f"{m_name}.{p_name}" if m_name else p_name: m for m_name, m in model.named_modules()
              for p_name, _ in m.named_parameters(recurse=False)}
    decayed = model.decayed_parameter_names()
    assert decayed, "nothing is decayed"
    params = dict(model.named_parameters())
    for name in decayed:
        assert isinstance(owners[name], (nn.Linear, nn.Embedding)) and name.endswith(".weight"), name
        assert params[name].dim() >= 2 and params[name].requires_grad, name
        assert not _is_decay_exempt(name), name
    trainable = {n for n, p in params.items() if p.requires_grad}
    for name in trainable - set(decayed):
        assert not (isinstance(owners[name], (nn.Linear, nn.Embedding)) and name.endswith(".weight")), \
            f"{variant}: the matrix {name} is not decayed"
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(params[n]) for n in decayed}
    exempt_seen = {n.rsplit(".", 1)[-1] for n in trainable - set(decayed)}
    expected = {"ssm": {"A_log", "dt_bias", "D"}, "ssm_mem": {"mem", "A_log"}, "rsm": {"mem_init", "bias"},
                "hrnn": {"g_x", "b_x", "g_hl", "g_hrec"}, "reservoir": {"gate"}, "act": {"bias"}}
    assert expected.get(variant, set()) <= exempt_seen, (variant, exempt_seen)
