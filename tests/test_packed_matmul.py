"""`unified.ops.packed_matmul.PackedWeight` (a weight packed once for many small products)
against float64 products, its fallbacks to torch.mm, the scans that use it compared with their
reference loops at a size where the packed path runs, and `unified.ops.host_memory`."""
from __future__ import annotations

import pytest
import torch

import unified.ops.packed_matmul as packed_matmul
from unified.ops.hrnn_scan import hierarchical_scan
from unified.ops.hrnn_scan_naive import hierarchical_scan_naive
from unified.ops.host_memory import host_memory_policy
from unified.ops.packed_matmul import PackedWeight
from unified.ops.tanh_scan import tanh_scan
from unified.ops.tanh_scan_naive import tanh_scan_naive

needs_onednn = pytest.mark.skipif(not packed_matmul._ops_available(), reason="this torch has no oneDNN packed linear")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


@needs_onednn
def test_packed_products_are_float32_products() -> None:
    """x @ w.T and base + x @ w.T through the packed weight: float32-level error against float64,
    for contiguous and strided x / base, with and without `out` (also out = base)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(768, 256, generator=g)
    pw = PackedWeight(w)
    assert pw.packed is not None
    x = torch.randn(256, 8, generator=g).t()  # strided rows
    base = torch.randn(8, 2, 768, generator=g)[:, 1]  # strided base
    ref = x.double() @ w.double().t()
    assert _rel(pw.mm(x), ref) < 1e-6
    assert _rel(pw.addmm(base, x), base.double() + ref) < 1e-6
    out = torch.empty(8, 768)
    assert pw.mm(x, out=out) is out and _rel(out, ref) < 1e-6
    acc = base.clone()
    pw.addmm(acc, x, out=acc)
    assert _rel(acc, base.double() + ref) < 1e-6


def test_fallbacks_are_torch_mm() -> None:
    """float64, a single row and small weights take torch.mm itself (bit-equal results)."""
    g = torch.Generator().manual_seed(1)
    w64, x64 = torch.randn(96, 48, generator=g, dtype=torch.float64), torch.randn(4, 48, generator=g, dtype=torch.float64)
    assert PackedWeight(w64).packed is None and torch.equal(PackedWeight(w64).mm(x64), x64 @ w64.t())
    small = torch.randn(192, 64, generator=g)
    assert small.numel() < packed_matmul.MIN_PACKED_NUMEL and PackedWeight(small).packed is None
    big, row = torch.randn(768, 256, generator=g), torch.randn(1, 256, generator=g)
    assert torch.equal(PackedWeight(big).mm(row), torch.mm(row, big.t()))
    base = torch.randn(1, 768, generator=g)
    assert torch.equal(PackedWeight(big).addmm(base, row), torch.addmm(base, row, big.t()))


@needs_onednn
def test_scans_on_the_packed_path_match_their_references(monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 hrnn and tanh scans with every weight packed (threshold lowered) against the
    autograd reference loops: values and gradients to float32 rounding."""
    monkeypatch.setattr(packed_matmul, "MIN_PACKED_NUMEL", 0)
    g = torch.Generator().manual_seed(2)
    H, B, L = 8, 3, 6
    rnd = lambda *s, k=1.0: (k * torch.randn(*s, generator=g)).requires_grad_()  # noqa: E731
    gains = [(torch.rand(3 * H, generator=g) + 0.5).requires_grad_() for _ in range(5)]
    hrnn_in = [rnd(B, L, 3 * H), rnd(B, H), rnd(B, H), rnd(6 * H, H, k=0.3), rnd(3 * H, H, k=0.3), rnd(3 * H, H, k=0.3),
               *gains]
    tanh_in = [rnd(B, L, 16), rnd(B, 16), rnd(16, 16, k=0.2)]
    cases = [(lambda *x: hierarchical_scan(*x, 2, 2, 0, 0, 1e-5), lambda *x: hierarchical_scan_naive(*x, 2, 2, 0, 0, 1e-5),
              hrnn_in), (lambda *x: tanh_scan(*x, 0.6), lambda *x: tanh_scan_naive(*x, 0.6), tanh_in)]
    for fused, ref, inputs in cases:
        results = []
        for fn in (fused, ref):
            outs = fn(*inputs)
            loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs)
            results.append((*outs, *torch.autograd.grad(loss, inputs)))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_host_memory_policy() -> None:
    """reuse and system are applied (on glibc) or reported as not applicable; other names fail."""
    try:
        got = host_memory_policy("reuse")
        assert got == "reuse" or got.startswith("system (")
        x = torch.ones(8 << 20)  # 32 MiB: served and freed under the policy
        assert float(x.sum()) == 8 << 20
        del x
    finally:
        assert host_memory_policy("system").startswith("system")
    with pytest.raises(ValueError, match="reuse or system"):
        host_memory_policy("jemalloc")


def test_train_and_eval_hub_keep_freed_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """train.py's machine settings and eval_hub.py both set the reuse policy."""
    import eval_hub
    import unified.train.resolve as resolve_mod
    from unified.train.config import TrainConfig

    calls: list[str] = []
    monkeypatch.setattr(resolve_mod, "reuse_freed_host_memory", lambda: calls.append("train") or "reuse")
    resolve_mod.machine_settings(TrainConfig.from_flat(device="cpu", matmul_precision="highest"))
    assert calls == ["train"]
    source = open(eval_hub.__file__).read()
    assert "reuse_freed_host_memory()" in source.split("def main", 1)[1]
