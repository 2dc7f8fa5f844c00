"""Speed paths (unified.ops.precision, cached RoPE tables in unified.models.layers) and the benchmark's
measurement and report logic (bench/run.py, bench/measure.py) on tiny inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from unified.errors import UnknownNameError
from unified.models.layers import cached_rope_tables, rope_tables
from unified.ops import precision as perf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


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


def test_small_matmul_precision_restores_the_setting() -> None:
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with perf.small_matmul_precision("cpu"):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "medium"
        with pytest.raises(RuntimeError), perf.small_matmul_precision("cpu"):
            raise RuntimeError("restored on errors too")
        assert torch.get_float32_matmul_precision() == "medium"
        with perf.small_matmul_precision("meta"):  # not a CPU device: left alone
            assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_matmul_error_is_fp32_level_under_highest() -> None:
    assert perf.matmul_error("highest") < perf.FP32_LEVEL_TOL


def test_bench_case_and_report() -> None:
    import measure
    import run

    before = torch.get_float32_matmul_precision()
    try:
        spec = {"row": "baseline", "size": "pico", "dtypes": ["fp32", "bf16"], "threads": 1,
                "matmul_precision": "highest", "batch": 2, "seq_len": 16, "warmup": 1, "steps": 2, "prompt_len": 8,
                "decode_tokens": 3, "cache_ratio": True, "cache_prompt": 8, "cache_new": 4}
        res, res_bf16 = measure.run_cases(spec)
    finally:
        torch.set_float32_matmul_precision(before)
    assert res["train_tok_s"] > 0 and len(res["step_s"]) == 2 and res["peak_rss_mib"] > 0
    assert res_bf16["dtype"] == "bf16" and res_bf16["train_tok_s"] > 0 and "decode_b1_tok_s" not in res_bf16
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


def test_rewriting_results_keeps_the_hand_kept_part(tmp_path) -> None:
    """bench/run.py rewrites RESULTS.md but keeps, from its marker on, the measurements of the
    other bench scripts, so every timing stays in that one file."""
    import run

    out = tmp_path / "RESULTS.md"
    run.write_markdown(out, "# Benchmark results\n\nold\n")
    assert out.read_text() == "# Benchmark results\n\nold\n"  # no marker: nothing to keep
    out.write_text("# Benchmark results\n\nold\n\n" + run.HAND_KEPT + "\n\n## kept\n\n| a | 1 |\n")
    run.write_markdown(out, "# Benchmark results\n\nnew\n")
    text = out.read_text()
    assert "new" in text and "old" not in text and text.endswith(run.HAND_KEPT + "\n\n## kept\n\n| a | 1 |\n")


def test_tanh_reservoir_scans_in_float32_under_bf16_autocast(monkeypatch) -> None:
    """The per-step recurrence gets W in float32 under bf16 autocast (the scan runs with autocast
    disabled, `float32_scan`); the loss matches fp32 loosely (the rest of the model is bf16)."""
    import unified.models.reservoir as reservoir
    from helpers import tiny_model

    model = tiny_model("reservoir")
    seen = []
    original = reservoir.tanh_scan
    monkeypatch.setattr(reservoir, "tanh_scan", lambda pre, h, w, leak: seen.append(w.dtype) or original(pre, h, w, leak))
    ids = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids[:, :-1], targets=ids[:, 1:]).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
    loss.backward()
    assert seen and set(seen) == {torch.float32}
    assert abs(loss.item() - ref.item()) < 0.05
