"""Products of many small row blocks with one fixed weight: the weight is reordered once into
oneDNN's blocked layout, then each product x @ w.T reads it as it is.

A recurrence over time (`hrnn_scan`, `tanh_scan`) multiplies the same weight by a (batch, in)
state at every step, thousands of times per sequence. torch.mm re-packs the weight on every
call, and for so few rows the packing, not the arithmetic, is much of the cost: on the 2-core
AVX-512 CPU of bench/RESULTS.md (`bench/packed_matmul.py`), an (8, 256) @ (256, 768) product
took 31-37 us through torch.mm and 22 us with the weight packed once, (8, 512) @ (512, 3072)
146-299 us against 78 us. The reorder costs about one product.

`PackedWeight(w)` uses the packed product when it can (float32 on a CPU with oneDNN enabled,
weights of at least `MIN_PACKED_NUMEL` entries, x with more than one row): below those sizes
the packed call's fixed ~20 us overhead loses to torch.mm. Otherwise (float64, CUDA, no
oneDNN) it is torch.mm. The values are float32 products either way (tests/test_packed_matmul.py
compares both with float64). It is oneDNN's float32 product, which under torch's "medium"
setting may compute in bf16 on CPUs with AMX, as torch.mm does there (`unified.ops.precision`:
`auto` does not pick "medium" on such CPUs). It is for use outside autograd (inside a Function's
forward or backward): the packed weight carries no gradient.
"""
from __future__ import annotations

from typing import Optional

import torch

# Below this many weight entries (e.g. a 64 x 192 weight) the packed call's fixed overhead
# (~20 us) exceeds torch.mm's whole cost at a few rows.
MIN_PACKED_NUMEL = 1 << 16


def _ops_available() -> bool:
    """Whether this torch build has oneDNN's packed linear ops and oneDNN is enabled."""
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


class PackedWeight:
    """A weight w (out, in) prepared for repeated products x @ w.T with x (rows, in)."""

    def __init__(self, w: torch.Tensor):
        self.wt = w.t()
        self.packed: Optional[torch.Tensor] = None
        if (w.device.type == "cpu" and w.dtype == torch.float32 and w.dim() == 2
                and w.numel() >= MIN_PACKED_NUMEL and _ops_available()):
            with torch.no_grad():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(w.detach().contiguous(), None)

    def uses_packed(self, x: torch.Tensor) -> bool:
        """Whether a product with x (rows, in) takes the packed weight (else torch.mm)."""
        return self.packed is not None and x.shape[0] > 1 and x.dtype == torch.float32

    def mm(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x @ w.T, written into `out` when given."""
        if not self.uses_packed(x):
            return torch.mm(x, self.wt, out=out)
        y = torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return y if out is None else out.copy_(y)

    def addmm(self, base: torch.Tensor, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """base + x @ w.T (base the same shape as the product), written into `out` when given
        (`out` may be `base` itself)."""
        if not self.uses_packed(x):
            return torch.addmm(base, x, self.wt, out=out)
        y = torch.ops.mkldnn._linear_pointwise.binary(x, base, self.packed, None, "add")
        return y if out is None else out.copy_(y)
