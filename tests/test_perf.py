"""Speed paths (unified.perf, the fused QKV + RoPE in unified.layers) and the benchmark's
report logic (bench/run.py, bench/measure.py) on tiny inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from unified import perf
from unified.errors import UnknownNameError
from unified.layers import apply_rope, cached_rope_tables, qkv_rope, rope_tables

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def reference_qkv_rope(qkv, cos, sin, H, Hkv, D):
    """The unfused path: split, view into heads, `apply_rope` on q and k."""
    B, T, _ = qkv.shape
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    q, k, v = (t.view(B, T, -1, D).transpose(1, 2) for t in (q, k, v))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


@pytest.mark.parametrize("H,Hkv", [(4, 4), (4, 2)])
def test_qkv_rope_matches_reference_and_gradcheck(H: int, Hkv: int) -> None:
    D, B, T, start = 8, 2, 5, 3
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, T, (H + 2 * Hkv) * D, generator=g)
    cos, sin = rope_tables(torch.arange(start, start + T), D, 10000.0)
    for got, want in zip(qkv_rope(qkv, cos, sin, H, Hkv, D), reference_qkv_rope(qkv, cos, sin, H, Hkv, D)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    x = qkv.double().requires_grad_()
    c, s = cos.double(), sin.double()
    assert torch.autograd.gradcheck(lambda t: qkv_rope(t, c, s, H, Hkv, D), (x,))
    # an unused output (None gradient) gets a zero gradient
    assert torch.autograd.gradcheck(lambda t: qkv_rope(t, c, s, H, Hkv, D)[1].square().sum(), (x,))


def test_qkv_rope_bf16_matches_reference() -> None:
    qkv = torch.randn(2, 6, 3 * 4 * 8).bfloat16()
    cos, sin = rope_tables(torch.arange(6), 8, 10000.0)
    for got, want in zip(qkv_rope(qkv, cos, sin, 4, 4, 8), reference_qkv_rope(qkv, cos, sin, 4, 4, 8)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)


def test_cached_rope_tables_slice_the_same_values() -> None:
    cos, sin = cached_rope_tables(700, 5, 16, 500.0, "cpu")
    ref_cos, ref_sin = rope_tables(torch.arange(700, 705), 16, 500.0)
    torch.testing.assert_close(cos, ref_cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, ref_sin, atol=1e-6, rtol=0)
    with torch.inference_mode():  # a table first built in inference mode must still serve training
        cached_rope_tables(0, 4000, 16, 123.0, "cpu")
    c, _ = cached_rope_tables(0, 4, 16, 123.0, "cpu")
    assert not c.is_inference()


def test_auto_precision_takes_medium_only_at_fp32_level_error(monkeypatch) -> None:
    before = torch.get_float32_matmul_precision()
    try:
        monkeypatch.setattr(perf, "matmul_error", lambda p, device="cpu": {"medium": 3e-3}.get(p, 2e-7))
        choice = perf.set_matmul_precision("auto")  # e.g. an AMX CPU: medium computes in bf16
        assert choice.setting == "highest" and choice.medium_error == 3e-3
        assert torch.get_float32_matmul_precision() == "highest"
        monkeypatch.setattr(perf, "matmul_error", lambda p, device="cpu": 4e-7)
        choice = perf.set_matmul_precision("auto")
        assert choice.setting == "medium" and torch.get_float32_matmul_precision() == "medium"
        assert perf.set_matmul_precision("highest").setting == "highest"
        with pytest.raises(UnknownNameError, match="accepted: auto, highest"):
            perf.set_matmul_precision("fast")
    finally:
        torch.set_float32_matmul_precision(before)


def test_matmul_error_is_fp32_level_under_highest() -> None:
    assert perf.matmul_error("highest") < perf.FP32_LEVEL_TOL


def test_bench_case_and_report() -> None:
    import measure
    import run

    before = torch.get_float32_matmul_precision()
    try:
        spec = {"row": "baseline", "size": "pico", "dtype": "fp32", "threads": 1, "matmul_precision": "highest",
                "batch": 2, "seq_len": 16, "warmup": 1, "steps": 2, "prompt_len": 8, "decode_tokens": 3,
                "cache_ratio": True, "cache_prompt": 8, "cache_new": 4}
        res = measure.run_case(spec)
    finally:
        torch.set_float32_matmul_precision(before)
    assert res["train_tok_s"] > 0 and len(res["step_s"]) == 2 and res["peak_rss_mib"] > 0
    assert res["decode_b1_tok_s"] > 0 and res["decode_b32_tok_s"] > 0 and res["prefill_tok_s"] > 0
    assert res["cache"]["same_tokens"] == 1.0 and "6 N_trainable" in res.pop("flops_formula")
    peak = {"fp32_gflops": 100.0, "bf16_gflops": 200.0}
    nano = dict(res, size="nano", train_tok_s=1e9 * 0.5 * 100.0 / res["flops_per_token"])
    rows = [res, nano, {"row": "ssm", "size": "nano", "dtype": "fp32", "flops_per_token": 1e6, "train_tok_s": 20e3}]
    run.add_mfu(rows, peak)
    assert nano["mfu"] == pytest.approx(0.5)
    targets = {t["target"]: t for t in run.check_targets(rows)}
    assert targets["baseline nano fp32 MFU >= 55%"]["met"] is False
    assert targets["baseline nano fp32 MFU >= 55%"]["gap"] == "5.0% short"
    assert targets["ssm nano fp32 MFU >= 30%"]["met"] is False  # 20 GFLOP/s of 100
    assert any(t.startswith("baseline pico cached decoding") for t in targets)
    with pytest.raises(UnknownNameError):
        run.split_list("baseline,nope", ["baseline"], "bench row")
