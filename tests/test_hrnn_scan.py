"""The fused recurrent scans (hand-written backward through time) against their reference loops
under autograd: `unified.ops.hrnn_scan` vs `hrnn_scan_naive` and `unified.ops.tanh_scan` vs
`tanh_scan_naive`. Float64 gradcheck of the fused Functions, equal values and gradients to the
references (also with truncated BPTT, where the gradient is not the Jacobian), and the models
really run the fused scans in training."""
from __future__ import annotations

import pytest
import torch

from helpers import tiny_model
from unified.ops.hrnn_scan import hierarchical_scan
from unified.ops.hrnn_scan_naive import hierarchical_scan_naive
from unified.ops.tanh_scan import tanh_scan
from unified.ops.tanh_scan_naive import tanh_scan_naive


def _hrnn_inputs(Hl: int, Hh: int, B: int = 2, L: int = 5, seed: int = 0) -> list[torch.Tensor]:
    """xn, low, high, w_high, u_low, w_up, g_hl, g_lrec, g_hin, b_hin, g_hrec in float64."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    gain = lambda n: (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).requires_grad_()  # noqa: E731
    return [rnd(B, L, 3 * Hl), rnd(B, Hl), rnd(B, Hh), rnd(3 * Hl + 3 * Hh, Hh), rnd(3 * Hl, Hl), rnd(3 * Hh, Hl),
            gain(3 * Hl), gain(3 * Hl), gain(3 * Hh), rnd(3 * Hh), gain(3 * Hh)]


def _vjp(fn, inputs: list[torch.Tensor], seed: int = 1) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Outputs of fn(*inputs) and the gradient of a random projection of all of them."""
    outs = fn(*inputs)
    g = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(o.shape, generator=g, dtype=o.dtype) * o).sum() for o in outs)
    return outs, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("Hl,Hh", [(4, 4), (3, 5)])  # one 6-gate norm of the high projection / one per part
def test_hrnn_scan_gradcheck_float64(Hl: int, Hh: int) -> None:
    inputs = _hrnn_inputs(Hl, Hh, L=3)
    assert torch.autograd.gradcheck(lambda *x: hierarchical_scan(*x, 2, 2, 0, 0, 1e-5), inputs)


@pytest.mark.parametrize("Hl,Hh,T,N,tbptt,pos", [(4, 4, 2, 2, 0, 0), (3, 5, 1, 3, 0, 0), (4, 4, 2, 2, 2, 1),
                                                 (4, 4, 3, 1, 3, 0)])
@pytest.mark.parametrize("loops", ["auto", "0"])  # the compiled per-step loops where they build / the Python ones
def test_hrnn_scan_equals_reference_values_and_gradients(monkeypatch, loops: str, Hl: int, Hh: int, T: int, N: int,
                                                         tbptt: int, pos: int) -> None:
    """Same values and gradients as autograd through the reference loop; with tbptt the
    reference detaches its states, the fused scan zeroes the carried gradients."""
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", loops)
    inputs = _hrnn_inputs(Hl, Hh, L=7)
    got, got_grads = _vjp(lambda *x: hierarchical_scan(*x, T, N, tbptt, pos, 1e-5), inputs)
    want, want_grads = _vjp(lambda *x: hierarchical_scan_naive(*x, T, N, tbptt, pos, 1e-5), inputs)
    for a, b in zip((*got, *got_grads), (*want, *want_grads)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if tbptt:  # truncation is visible: the full-BPTT gradient differs
        _, full = _vjp(lambda *x: hierarchical_scan_naive(*x, T, N, 0, pos, 1e-5), inputs)
        assert (full[0] - got_grads[0]).abs().max() > 1e-6


def test_hrnn_scan_without_gradients_builds_no_graph() -> None:
    inputs = [x.detach() for x in _hrnn_inputs(4, 4)]
    hs, low, high = hierarchical_scan(*inputs, 2, 2, 0, 0, 1e-5)
    ref = hierarchical_scan_naive(*inputs, 2, 2, 0, 0, 1e-5)
    assert hs.grad_fn is None and low.grad_fn is None
    for a, b in zip((hs, low, high), ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("leak", [1.0, 0.6])
def test_tanh_scan_gradcheck_and_reference(leak: float) -> None:
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 6, 5, generator=g, dtype=torch.float64).requires_grad_(),
              torch.randn(2, 5, generator=g, dtype=torch.float64).requires_grad_(),
              (0.5 * torch.randn(5, 5, generator=g, dtype=torch.float64)).requires_grad_()]
    assert torch.autograd.gradcheck(lambda *x: tanh_scan(*x, leak), inputs)
    got, got_grads = _vjp(lambda *x: tanh_scan(*x, leak), inputs)
    want, want_grads = _vjp(lambda *x: tanh_scan_naive(*x, leak), inputs)
    for a, b in zip((*got, *got_grads), (*want, *want_grads)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # float32 forward, no graph: the same ops, equal to float32 rounding
        x32 = [x.detach().float() for x in inputs]
        out, last = tanh_scan(*x32, leak)
        assert out.grad_fn is None and out.is_contiguous()
        torch.testing.assert_close(out, tanh_scan_naive(*x32, leak)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant,opts", [("hrnn", {}), ("hrnn", {"low_hidden": 24, "tbptt": 5}),
                                          ("reservoir", {}), ("reservoir", {"leak_rate": 0.5})])
def test_models_train_through_the_fused_scans(variant: str, opts: dict) -> None:
    """A training forward goes through the fused Function, and its parameter gradients equal
    those of the same model run on the reference loop."""
    import unified.models.hrnn as hrnn
    import unified.models.reservoir as reservoir

    mod, name, ref = ((hrnn, "hierarchical_scan", hierarchical_scan_naive) if variant == "hrnn"
                      else (reservoir, "tanh_scan", tanh_scan_naive))
    model = tiny_model(variant, **opts).train()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(0))
    grads = []
    for fn in (getattr(mod, name), ref):
        original = getattr(mod, name)
        setattr(mod, name, fn)
        try:
            model.zero_grad(set_to_none=True)
            out = model(ids[:, :-1], targets=ids[:, 1:])
            out.loss.backward(retain_graph=True)
        finally:
            setattr(mod, name, original)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert _reaches_fused(out.loss.grad_fn) == (fn is not ref)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("variant", ["hrnn", "reservoir"])
@pytest.mark.parametrize("loops", ["auto", "0"])  # (dynamo cannot trace into the compiled loops anyway)
def test_sequential_models_under_torch_compile_run_their_scans_eagerly(monkeypatch, loops: str, variant: str) -> None:
    """train.py --compile: the scans are excluded from dynamo (a loop over every step, which it
    would unroll: an hrnn pico run did not finish its first step in 10 minutes), so the compiled
    model trains through the same fused Function and gives the eager model's loss and gradients."""
    monkeypatch.setenv("UNIFIED_COMPILED_LOOPS", loops)
    torch.manual_seed(0)
    model = tiny_model(variant).train()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(0))
    results = []
    for m in (model, torch.compile(model, backend="eager")):
        model.zero_grad(set_to_none=True)
        out = m(ids[:, :-1], targets=ids[:, 1:])
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss, grads), (c_loss, c_grads) = results
    torch.testing.assert_close(c_loss, loss, rtol=1e-6, atol=1e-7)
    assert grads.keys() == c_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(c_grads[n], grads[n], rtol=1e-5, atol=1e-7, msg=n)
    # the graphs dynamo captures do not grow with the sequence: the loop is not unrolled into them
    sizes = []
    for length in (4, 12):
        torch._dynamo.reset()
        nodes: list[int] = []

        def count(gm, example_inputs):
            nodes.append(len(gm.graph.nodes))
            return gm.forward

        torch.compile(model, backend=count)(ids[:, :length], targets=ids[:, 1:length + 1])
        sizes.append(sum(nodes))
    torch._dynamo.reset()
    assert sizes[0] == sizes[1] > 0, sizes


def _reaches_fused(fn, seen: set | None = None) -> bool:
    """Whether the autograd graph below `fn` contains one of the fused scans' backward nodes."""
    seen = set() if seen is None else seen
    stack = [fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in ("_HierarchicalScanBackward", "_TanhScanBackward"):
            return True
        stack += [nxt for nxt, _ in node.next_functions]
    return False
