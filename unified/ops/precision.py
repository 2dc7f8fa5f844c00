"""Numeric precision of the kernels: the float32 matmul path (a speed setting shared by the CLIs
and the benchmark) and the dtype recurrences over time run in (`scan_dtype`, `float32_scan`).

`torch.set_float32_matmul_precision` picks how float32 matrix products are computed. Its
effect depends on the hardware: on AVX-512 CPUs without AMX, "medium" routes float32 matmuls
to oneDNN, about twice as fast as the default MKL path with float32-level error; on CPUs with
AMX (and on GPUs with TF32) the same setting computes in a reduced precision (bf16 / TF32,
relative error ~1e-3). So the setting is chosen by *measuring* its error against float64 on
the device in use: `auto` takes "medium" only when its error stays at float32 level
(`FP32_LEVEL_TOL`), otherwise "highest". The choice and the error measured are returned so
runs and benchmarks can record them.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from unified.errors import UnknownNameError

MATMUL_PRECISIONS = ("auto", "highest", "high", "medium")
# Relative Frobenius error vs float64 of a float32 product with K = 512 is ~3e-7 (unit roundoff
# 6e-8 times a small factor); TF32 gives ~5e-4 and bf16 ~3e-3. 1e-5 separates them clearly.
FP32_LEVEL_TOL = 1e-5


@dataclass
class PrecisionChoice:
    """The matmul precision in effect: what was asked, what was set, and the relative error vs
    float64 measured for the setting that was set (`error`) and for "medium" (`medium_error`,
    checked by `auto`)."""

    requested: str
    setting: str
    error: float
    medium_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matmul_error(precision: str, device: torch.device | str = "cpu", k: int = 512, seed: int = 0) -> float:
    """Largest relative error (Frobenius norm, vs a float64 reference) of float32 `a @ b` and
    `F.linear(a, w)` (the model's path) computed under `precision`. The global setting is restored."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(256, k, generator=g), torch.randn(k, 384, generator=g)
    w = b.t().contiguous()
    ref = (a.double() @ b.double())
    a, b, w = a.to(device), b.to(device), w.to(device)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        outs = [a @ b, F.linear(a, w)]
    finally:
        torch.set_float32_matmul_precision(before)
    return max(float((o.double().cpu() - ref).norm() / ref.norm()) for o in outs)


def set_matmul_precision(choice: str = "auto", device: torch.device | str = "cpu") -> PrecisionChoice:
    """Set torch's float32 matmul precision for this process.

    `auto`: "medium" if its measured error on `device` stays at float32 level (<= FP32_LEVEL_TOL),
    else "highest". `highest` / `high` / `medium`: set as asked (error still measured and returned,
    so a reduced-precision choice is visible in the records)."""
    if choice not in MATMUL_PRECISIONS:
        raise UnknownNameError("--matmul_precision", choice, MATMUL_PRECISIONS)
    medium_error = None
    if choice == "auto":
        medium_error = matmul_error("medium", device)
        setting = "medium" if medium_error <= FP32_LEVEL_TOL else "highest"
    else:
        setting = choice
    error = medium_error if setting == "medium" and medium_error is not None else matmul_error(setting, device)
    torch.set_float32_matmul_precision(setting)
    return PrecisionChoice(requested=choice, setting=setting, error=error, medium_error=medium_error)


@contextlib.contextmanager
def small_matmul_precision(device: torch.device | str) -> Iterator[None]:
    """Run the block with the default ("highest") float32 matmul path on CPU devices.

    Decoding multiplies small matrices (one token per sequence, a growing KV cache); under
    "medium" oneDNN handles every float32 product, and for such shapes its per-call overhead
    (packing the weights each call) makes cached decoding ~2x slower than the default path,
    while large training / prefill products gain; CPU flash attention is also slower under
    "medium" (unified.models.layers runs it in this block). Both paths have float32-level error. No effect
    on other devices (on CUDA the setting means TF32, which `auto` never picks)."""
    before = torch.get_float32_matmul_precision()
    if torch.device(device).type != "cpu" or before == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def scan_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a scan over x runs in: float32, or float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def float32_scan(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context for a recurrence over time (a scan) on x's device: autocast disabled, so the
    products inside run in the dtype of their inputs. Callers cast those to `scan_dtype`: a
    bf16 rounding made at every step compounds along the sequence (issue 14 measured 7.8e-3
    relative error for the linear reservoir scan under bf16 autocast, 1.8e-7 in float32).
    Matmuls outside the recurrence stay under autocast."""
    if x.device.type not in ("cpu", "cuda", "xpu", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)
