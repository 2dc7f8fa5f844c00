"""The call contract of the fused SSM kernels, checked on CPU against mamba-ssm 2.3.2.post1's and
causal-conv1d 1.7.0's real Python wrappers (tests/kernel_emulation.py: the packages' own wrapper
code runs, the GPU launches are emulated from their addressing). Our dispatch path runs
unchanged: `ssd_scan.fused_kernels` (the one seam that selects kernel functions) is pointed at
the loaded wrappers, as it would be on CUDA with the packages installed.

Skipped when the sdists are absent (`bash .ci/fetch_kernel_sources.sh` fetches them); .ci/run fetches
them and sets UNIFIED_REQUIRE_KERNEL_SOURCES=1, which turns the skip into a failure.
Forward passes only: the wrappers' backward kernels are not emulated (bench/gpu_check.py trains
through them on a GPU)."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

import kernel_emulation as ke
from helpers import TINY, tiny_model
from test_ssm import random_inputs
from unified.models.ssm import kernel_backends
from unified.ops import ssd_scan

SCAN_KERNELS = {"_chunk_cumsum_fwd_kernel", "_chunk_state_fwd_kernel", "_state_passing_fwd_kernel",
                "_bmm_chunk_fwd_kernel", "_chunk_scan_fwd_kernel"}
STEP_KERNEL = "_selective_scan_update_kernel"


@pytest.fixture(scope="module")
def wrappers():
    """The packages' wrapper functions, or skip (saying how to fetch the sources)."""
    missing = ke.missing_sources()
    if missing and os.environ.get("UNIFIED_REQUIRE_KERNEL_SOURCES"):  # CI: a missing fetch is a failure
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    return ke.load()


@pytest.fixture
def kernels(wrappers, monkeypatch: pytest.MonkeyPatch) -> ssd_scan.FusedKernels:
    """Route our dispatch to the real wrappers for CPU tensors (as on CUDA with both installed).
    `torch.cuda.device(index)`, which the wrappers enter around launches, is a no-op here."""
    k = ssd_scan.FusedKernels(wrappers.chunk_scan, wrappers.state_update, wrappers.conv, wrappers.conv_update)
    monkeypatch.setattr(ssd_scan, "fused_kernels", lambda device: k)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    ke.LAUNCHES.clear()
    ke.LAST.clear()
    return k


def _torch_path(fn, *args, **kwargs):
    """Run `fn` with the PyTorch path (no kernels), whatever the seam says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ssd_scan, "fused_kernels", lambda device: ssd_scan.NO_KERNELS)
        return fn(*args, **kwargs)


def test_the_harness_reproduces_the_old_crash(kernels) -> None:
    """Issue 18's finding, through the real wrapper: the old call (dt_bias and D omitted, A/dt
    tied with stride 0) raises AttributeError; with dt_bias but D=None, TypeError (PR #796)."""
    x, dt, A, B, C, h0 = random_inputs(1, seed=1, H=3, P=4, N=5)
    b, _, H, P = x.shape
    N = B.shape[-1]
    args = (h0.clone(), x[:, 0], dt[:, 0, :, None].expand(b, H, P), A[:, None, None].expand(H, P, N),
            B[:, 0, None, :], C[:, 0, None, :])
    with pytest.raises(AttributeError, match="stride"):
        kernels.state_update(*args)
    with pytest.raises(TypeError):
        kernels.state_update(*args, dt_bias=torch.zeros(H)[:, None].expand(H, P))


@pytest.mark.parametrize("T", [1, 5, 8, 13, 40])
@pytest.mark.parametrize("with_state", [False, True])
def test_scan_through_the_wrappers_equals_the_torch_scan(kernels, T: int, with_state: bool) -> None:
    """`ssd_scan` on the kernel path == the PyTorch path (outputs and final state, 1e-5), the
    state comes back float32, and the expected kernels were launched: the five SSD kernels for a
    scan, `selective_state_update` (tied over headdim, explicit dt_bias and D) for one cached token."""
    x, dt, A, B, C, h0 = random_inputs(T, seed=T, H=4, P=8, N=16)
    init = h0.clone() if with_state else None
    ref_y, ref_h = _torch_path(ssd_scan.ssd_scan, x, dt, A, B, C, 8, init)
    y, h = ssd_scan.ssd_scan(x, dt, A, B, C, 8, init)
    assert y.shape == x.shape and y.dtype == x.dtype and h.dtype == torch.float32
    torch.testing.assert_close(y, ref_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, ref_h, atol=1e-5, rtol=1e-5)
    if with_state and T == 1:
        assert set(ke.LAUNCHES) == {STEP_KERNEL}
        a = ke.LAST[STEP_KERNEL]
        assert a["TIE_HDIM"] and a["HAS_DT_BIAS"] and a["HAS_D"] and not a["DT_SOFTPLUS"]
        assert torch.equal(init, h0), "the cached state must not be updated in place"
    else:
        assert set(ke.LAUNCHES) == SCAN_KERNELS
        assert ke.LAST["_state_passing_fwd_kernel"]["HAS_INITSTATES"] == with_state


@pytest.mark.parametrize("T", [1, 2, 3, 7, 20])
@pytest.mark.parametrize("with_past", [False, True])
def test_conv_through_the_wrappers_equals_the_torch_conv(kernels, T: int, with_past: bool) -> None:
    """`causal_conv_silu` through causal-conv1d (channel-last layout with initial/final states;
    `causal_conv1d_update` for one cached token) == the PyTorch conv, output and new state."""
    g = torch.Generator().manual_seed(T)
    Cdim, width = 24, 4
    xbc = torch.randn(2, T, Cdim, generator=g)
    w, bias = torch.randn(Cdim, 1, width, generator=g), torch.randn(Cdim, generator=g)
    past = torch.randn(2, Cdim, width - 1, generator=g) if with_past else None
    ref_y, ref_s = _torch_path(ssd_scan.causal_conv_silu, xbc, w, bias, past)
    y, s = ssd_scan.causal_conv_silu(xbc, w, bias, past)
    torch.testing.assert_close(y, ref_y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, ref_s, atol=1e-6, rtol=1e-6)
    assert set(ke.LAUNCHES) == ({"causal_conv1d_update"} if with_past and T == 1 else {"causal_conv1d_fwd"})


@pytest.mark.parametrize("variant", ["ssm", "ssm_mem"])
def test_model_on_the_kernel_path_equals_the_torch_path(kernels, variant: str) -> None:
    """Whole models: full forward and prefill + chunked + step-by-step cached decoding through the
    wrappers give the PyTorch path's logits; kernel_backends reports the kernels."""
    model = tiny_model(variant).eval()
    assert kernel_backends(model) == {"ssm_scan": "mamba_ssm", "conv1d": "causal_conv1d"}
    ids = torch.randint(0, TINY["vocab_size"], (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _torch_path(lambda: model(ids).logits)
        full = model(ids).logits
        torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-4)
        cache, parts = model.init_cache(2), []
        for a, b in zip([0, 5, 6, 15, 16, 17], [5, 6, 15, 16, 17, 23]):
            out = model(ids[:, a:b], cache=cache)
            cache = out.cache
            parts.append(out.logits)
    torch.testing.assert_close(torch.cat(parts, 1), ref, atol=1e-5, rtol=1e-4)
    assert SCAN_KERNELS | {STEP_KERNEL, "causal_conv1d_fwd", "causal_conv1d_update"} <= set(ke.LAUNCHES)


def test_bf16_autocast_on_the_kernel_path(kernels) -> None:
    """Under bf16 autocast the wrappers accept our tensors (bf16 activations, float32 weights;
    conv state cast to the input dtype as causal-conv1d requires), the cached SSM state stays
    float32, and the logits agree with the PyTorch path within bf16 tolerance."""
    model = tiny_model("ssm").eval()
    ids = torch.randint(0, TINY["vocab_size"], (2, 14), generator=torch.Generator().manual_seed(1))

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(ids[:, :1], cache=model.init_cache(2))  # a step from the float32 initial cache
            logits = [out.logits]
            out = model(ids[:, 1:10], cache=out.cache)
            logits.append(out.logits)
            for t in range(10, 14):
                out = model(ids[:, t:t + 1], cache=out.cache)
                logits.append(out.logits)
        return torch.cat(logits, 1).float(), out.cache

    with torch.no_grad():
        ref, _ = _torch_path(run)
        got, cache = run()
    assert all(s.dtype == torch.float32 for s in cache.ssm)
    assert ke.LAUNCHES[STEP_KERNEL] > 0 and ke.LAUNCHES["causal_conv1d_update"] > 0
    scale = ref.abs().max().item()
    assert (got - ref).abs().max().item() <= 0.05 * scale


def test_loader_takes_the_triton_kernels_from_an_install_without_cuda_extension(wrappers) -> None:
    """`MAMBA_SKIP_CUDA_BUILD=TRUE pip install mamba-ssm` gives a package whose __init__ fails
    (it imports the Mamba-1 CUDA extension); our loader still imports the Mamba-2 Triton kernels."""
    with ke.installed_without_cuda_extension():
        with pytest.raises(ImportError, match="selective_scan_cuda"):
            import mamba_ssm  # noqa: F401
        scan, step = ssd_scan._load_mamba()
        assert scan.__name__ == "mamba_chunk_scan_combined" and step.__name__ == "selective_state_update"
        assert scan.__module__ == "mamba_ssm.ops.triton.ssd_combined"
        assert str(ke.sources_dir()) in scan.__code__.co_filename
