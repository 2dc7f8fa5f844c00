"""The compiled per-step loops (`unified.ops.compiled`, unified/ops/csrc/hrnn_loops.cpp) against
the Python loops they replace: the same values and gradients bit for bit (same ATen calls in the
same order), on the packed-product path, with Hl != Hh, truncated BPTT and float64; the choice
UNIFIED_COMPILED_LOOPS (auto / 0 / 1) and the fallback when the build fails."""
from __future__ import annotations

import pytest
import torch

import unified.ops.compiled as compiled
import unified.ops.hrnn_scan as hrnn_scan
from unified.errors import ConfigError


def _require_build() -> None:
    if compiled.compiled_ops("unified_hrnn") is None:
        pytest.skip("the compiled loops did not build on this machine (C++ compiler or ninja missing)")


def _inputs(dtype: torch.dtype, Hl: int, Hh: int, B: int, L: int) -> list[torch.Tensor]:
    """xn, low, high, w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec (requiring gradients)."""
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: (0.3 * torch.randn(*s, generator=g, dtype=dtype)).requires_grad_()  # noqa: E731
    gain = lambda n: (torch.rand(n, generator=g, dtype=dtype) + 0.5).requires_grad_()  # noqa: E731
    return [rnd(B, L, 3 * Hl), rnd(B, Hl), rnd(B, Hh), rnd(3 * Hl + 3 * Hh, Hh), rnd(3 * Hl, Hl), rnd(3 * Hh, Hl),
            gain(3 * Hl), gain(3 * Hl), gain(3 * Hh), rnd(3 * Hh), gain(3 * Hh)]


def _scan_and_grads(dtype: torch.dtype, Hl: int, Hh: int, T: int, N: int, tbptt: int, pos: int, B: int,
                    L: int) -> list[torch.Tensor]:
    """Outputs of hierarchical_scan, the gradients of a random projection of them, and the
    outputs without gradients."""
    inputs = _inputs(dtype, Hl, Hh, B, L)
    g = torch.Generator().manual_seed(1)
    outs = hrnn_scan.hierarchical_scan(*inputs, T, N, tbptt, pos, 1e-5)
    loss = sum((torch.randn(o.shape, generator=g, dtype=dtype) * o).sum() for o in outs)
    with torch.no_grad():  # the one-step-buffer forward of evaluation
        plain = hrnn_scan.hierarchical_scan(*(x.detach() for x in inputs), T, N, tbptt, pos, 1e-5)
    return [*outs, *torch.autograd.grad(loss, inputs), *plain]


def _boom(*args, **kwargs):
    raise AssertionError("the Python loop ran where the compiled one should have")


@pytest.mark.parametrize("dtype,Hl,Hh,T,N,tbptt,pos,B,L", [
    (torch.float32, 256, 256, 2, 2, 0, 0, 4, 4),  # weights large enough for the packed products
    (torch.float32, 16, 24, 3, 2, 2, 1, 3, 5),  # one norm per part of the high projection; tbptt
    (torch.float64, 4, 4, 2, 3, 0, 0, 2, 4),  # torch.mm products
])
def test_compiled_loops_equal_python_loops_bit_for_bit(monkeypatch, dtype, Hl, Hh, T, N, tbptt, pos, B, L) -> None:
    _require_build()
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "0")
    want = _scan_and_grads(dtype, Hl, Hh, T, N, tbptt, pos, B, L)
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "1")
    monkeypatch.setattr(hrnn_scan, "_forward_loop", _boom)
    monkeypatch.setattr(hrnn_scan, "_backward_loop", _boom)
    got = _scan_and_grads(dtype, Hl, Hh, T, N, tbptt, pos, B, L)
    assert len(got) == len(want) == 3 + 11 + 3
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and torch.equal(a, b), f"result {i} differs by {(a - b).abs().max().item():.3g}"


def test_choice_zero_never_builds_and_bad_values_are_one_line_errors(monkeypatch) -> None:
    def no_build(**kwargs):
        raise AssertionError("built although UNIFIED_COMPILED_LOOPS=0")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_build)
    monkeypatch.setattr(compiled, "_loaded", {})
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "0")
    assert compiled.compiled_ops("unified_hrnn") is None
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "yes")
    with pytest.raises(ConfigError, match=r"UNIFIED_COMPILED_LOOPS='yes' is not accepted; accepted: auto, 0, 1"):
        compiled.compiled_ops("unified_hrnn")


def test_failed_build_falls_back_with_a_warning_under_auto_and_fails_under_one(monkeypatch) -> None:
    def failing_build(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\nmore detail")

    monkeypatch.setattr("torch.utils.cpp_extension.load", failing_build)
    monkeypatch.setattr(compiled, "_loaded", {})
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "1")
    with pytest.raises(ConfigError, match="did not build \\(Ninja is required to load C\\+\\+ extensions\\)"):
        compiled.compiled_ops("unified_hrnn")
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "auto")
    with pytest.warns(RuntimeWarning, match="using the Python loops"):
        assert compiled.compiled_ops("unified_hrnn") is None
    assert compiled.compiled_ops("unified_hrnn") is None  # decided once per process: no second build
    # the scan still runs (the Python loops) and matches the float64 reference loop
    from unified.ops.hrnn_scan_naive import hierarchical_scan_naive
    x = _inputs(torch.float64, 4, 4, 2, 3)
    got = hrnn_scan.hierarchical_scan(*x, 2, 2, 0, 0, 1e-5)
    for a, b in zip(got, hierarchical_scan_naive(*x, 2, 2, 0, 0, 1e-5)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_build_prints_one_note_and_a_cached_load_none(monkeypatch, capsys) -> None:
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: None)
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", "auto")
    for threshold, noted in ((-1.0, True), (1e9, False)):  # the load "took" longer / shorter than a build
        monkeypatch.setattr(compiled, "_loaded", {})
        monkeypatch.setattr(compiled, "_BUILD_NOTE_S", threshold)
        assert compiled.compiled_ops("unified_hrnn") is not None
        err = capsys.readouterr().err
        assert ("note: built the compiled loops 'unified_hrnn'" in err) == noted, err
