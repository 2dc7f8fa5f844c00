"""The transformer option pos_encoding = rope | learned | nope under the registry's property tests,
and what each encoding does (and does not) tell the model about positions."""
from __future__ import annotations

import pytest
import torch

import helpers
import test_properties as props
from helpers import TINY, tiny_model
from unified.errors import ConfigError

CASES = [("baseline", "learned"), ("baseline", "nope"), ("shared_loop", "learned"), ("shared_loop", "nope")]


@pytest.fixture
def encoding(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the property tests build `variant` with the given pos_encoding."""
    variant, pe = request.param
    monkeypatch.setitem(helpers.TINY_OVERRIDES, variant, {**helpers.TINY_OVERRIDES[variant], "pos_encoding": pe})
    return variant


@pytest.mark.parametrize("encoding", CASES, indirect=True, ids=[f"{v}-{p}" for v, p in CASES])
def test_property_contracts(encoding: str) -> None:
    """Causality (eval and train), cache equivalence, gradient reach, determinism, ignore index, bf16."""
    props.test_causality(encoding, "eval")
    props.test_causality(encoding, "train")
    props.test_cache_equivalence(encoding)
    props.test_gradient_reach(encoding)
    props.test_determinism(encoding)
    props.test_targets_ignore_index(encoding)
    props.test_bf16_autocast_trains(encoding)


def _last_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


def test_nope_sees_no_order_and_rope_does() -> None:
    """One layer without positions: the last position's output depends on the earlier tokens
    only as a set, so swapping two of them changes nothing; with RoPE or learned positions it does."""
    a, b = [5, 9, 14, 3, 7], [9, 5, 14, 3, 7]
    out = {pe: tiny_model("baseline", n_layers=1, pos_encoding=pe).eval() for pe in ("nope", "rope", "learned")}
    assert torch.allclose(_last_logits(out["nope"], a), _last_logits(out["nope"], b), atol=1e-6)
    for pe in ("rope", "learned"):
        assert (_last_logits(out[pe], a) - _last_logits(out[pe], b)).abs().max() > 1e-5, pe


def test_learned_table_parameters_and_flops() -> None:
    """learned adds max_seq_len x d_model parameters (a lookup: no FLOPs); rope and nope add none."""
    rope, learned, nope = (tiny_model("baseline", pos_encoding=pe) for pe in ("rope", "learned", "nope"))
    assert learned.num_params() - rope.num_params() == TINY["max_seq_len"] * TINY["d_model"]
    assert nope.num_params() == rope.num_params()
    assert learned.flops_per_token(32) == rope.flops_per_token(32) == nope.flops_per_token(32)
    assert learned.describe()["options"]["pos_encoding"] == "learned"


def test_learned_runs_past_its_table_with_the_cache() -> None:
    """Beyond max_seq_len the last learned row is reused: no crash, and the cache still agrees."""
    model = tiny_model("baseline", pos_encoding="learned", max_seq_len=16).eval()
    ids = props._ids(t=24)
    with torch.no_grad():
        full = model(ids).logits
        cache = model.init_cache(2)
        steps = []
        for t in range(24):
            out = model(ids[:, t:t + 1], cache=cache)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_bad_pos_encoding_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pos_encoding must be one of rope, learned, nope"):
        tiny_model("baseline", pos_encoding="alibi")
