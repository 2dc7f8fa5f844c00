"""Hierarchical recurrent LM (`hrnn`): two GRU levels running at two timescales per token.

For each token t, the high level runs N cycles; in each cycle the low level runs T steps on
[token embedding; high state], then the high level updates from the final low state:

    h_l <- GRU_low([x_t; h_h], h_l)      T times       (fast, inner loop)
    h_h <- GRU_high(h_l, h_h)            once per cycle (slow, outer loop, N cycles)

Both states carry across tokens and the logits of position t are read from h_h after its N-th
cycle, so the model is causal by construction (a recurrence over the past only). The cells are
GRUs with layer normalisation on the input and recurrent pre-activations of every gate
(Ba, Kiros & Hinton 2016, "Layer Normalization"; GRU: Cho et al. 2014), each product with its
own per-gate LayerNorm (gates ordered reset r, update z, candidate n):

    low:  [r, z, n]_in = LN(W_x x_t) + b + LN(W_h h_h),   [r, z, n]_rec = LN(U_l h_l)
    high: [r, z, n]_in = LN(W_up h_l) + b',                [r, z, n]_rec = LN(U_h h_h)
    r, z = sigmoid(in_rz + rec_rz);   n = tanh(in_n + r * rec_n);   h' = (1 - z) n + z h

FLOPs per token (training, fwd + bwd; `flops_per_token` = 6 x `matmul_params`), with H_l, H_h
the state widths, d the model width and V the vocabulary:
    6 (3 d H_l + N (3 H_h (H_l + H_h) + 3 H_l H_h + 3 T H_l^2) + d V)   (+ 6 H_h d when H_h != d)
i.e. 6 x the weights of the N (T + 1) cell applications and the LM head; no attention term.
Decoding state: H_l + H_h floats per sequence, constant in length.

The design follows the
HRMLM reference (hierarchical reasoning over two timescales, cf. Wang et al. 2025, "Hierarchical
Reasoning Model"), with its faults fixed: it builds, decoding keeps (h_l, h_h) in the cache, and
generation is conditioned on the whole prompt because the prompt is consumed by the recurrence.

Speed: the token term LN(W_x x) of the whole sequence is one matmul (and one norm) up front;
inside a cycle the low cell's input side LN(W_x x_t) + LN(W_h h_h) is constant, so each low step
costs one matmul (U_l h_l); after a high update one fused matmul gives both the next cycle's low
input term W_h h_h and the high cell's recurrent term U_h h_h. Per token that is N (T + 2)
dependent matmuls for N (T + 1) cell applications. The scan (`unified.ops.hrnn_scan`) is one
autograd Function with a hand-written backward through time (gate coefficients for all steps
in batched ops, one fused layer-norm backward and one product per step in the reverse loop,
every per-step product with its weight packed once, the weight gradients as one product over
all steps, and both loops over steps compiled into a C++ extension on CPU, `unified.ops.compiled`);
`unified.ops.hrnn_scan_naive` is the plain autograd loop it is tested against. Measured on CPU (micro, batch 8), `torch.jit.script` of the
plain loop was no faster at first and ~10x slower once its profiling executor re-optimised, and
`torch.compile` of the per-token step recompiled and ran ~10x slower; both were dropped.
Precision: the scan runs in float32 with autocast disabled (`float32_scan`; a bf16 rounding at
every step would compound over the sequence); W_x and the output projection stay under autocast.
`tbptt` > 0 detaches the carried states every `tbptt` tokens in training (truncated BPTT); that
changes gradients only, never forward values. T and N may be changed at evaluation time
(`eval_overridable`) to test whether more inner steps per token help.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from unified.errors import ConfigError
from unified.models.base import BodyOutput, LanguageModel, register_variant
from unified.ops.hrnn_scan import hierarchical_scan
from unified.ops.hrnn_scan_naive import group_ln
from unified.ops.precision import float32_scan, scan_dtype


# Reference recipes scaled down: (T, N) per size. Larger sizes think longer per token.
_DEFAULT_TN: dict[str, tuple[int, int]] = {
    "pico": (2, 2), "micro": (2, 2), "nano": (3, 2), "50M": (3, 2), "125M": (3, 2),
    "300M": (5, 3), "350M": (5, 3), "760M": (5, 3), "1B": (7, 4), "1B-16k": (7, 4),
}


@dataclass
class HRNNOptions:
    """T: low-level steps per high cycle; N: high cycles per token (0 = scale default, see
    `_DEFAULT_TN`; the reference used T=5, N=3). low_hidden / high_hidden: state widths
    (0 = d_model). tbptt: detach the carried states every `tbptt` tokens in training (0 = full
    backpropagation through the sequence)."""

    T: int = 0
    N: int = 0
    low_hidden: int = 0
    high_hidden: int = 0
    tbptt: int = 0


@dataclass
class HRNNCache:
    """Decoding cache: the two recurrent states (B, H) and the number of tokens consumed."""

    low: torch.Tensor
    high: torch.Tensor
    pos: int = 0


@register_variant("hrnn")
class HRNNLM(LanguageModel):
    """Two-level LayerNorm-GRU language model (HRMLM); see the module docstring.

    `cfg.n_layers`, `n_heads` and `d_ff` are unused: the body is one hierarchical recurrence
    whose depth per token is N (T + 1) cell applications."""

    Options = HRNNOptions
    eval_overridable = ("T", "N")
    parallel_in_time = False  # a loop over positions

    def __init__(self, cfg, opts: HRNNOptions):
        dt, dn = _DEFAULT_TN.get(cfg.size, (2, 2))
        opts.T, opts.N = opts.T or dt, opts.N or dn
        opts.low_hidden = opts.low_hidden or cfg.d_model
        opts.high_hidden = opts.high_hidden or cfg.d_model
        for name in ("T", "N", "low_hidden", "high_hidden"):
            if getattr(opts, name) < 1:
                raise ConfigError(f"hrnn option {name} must be >= 1 (0 = scale default), got {getattr(opts, name)}")
        if opts.tbptt < 0:
            raise ConfigError(f"hrnn option tbptt must be >= 0 (0 = full BPTT), got {opts.tbptt}")
        super().__init__(cfg, opts)
        d, hl, hh = cfg.d_model, opts.low_hidden, opts.high_hidden
        self.drop = nn.Dropout(cfg.dropout)
        self.w_x = nn.Linear(d, 3 * hl, bias=False)  # token part of the low cell's input weight
        self.w_high = nn.Linear(hh, 3 * hl + 3 * hh, bias=False)  # [W_h (low input); U_h (high recurrent)]
        self.u_low = nn.Linear(hl, 3 * hl, bias=False)  # low recurrent weight
        self.w_up = nn.Linear(hl, 3 * hh, bias=False)  # high input weight (from the low state)
        # Per-gate layer-norm gains of each product, and the gate biases (on the input side).
        self.g_x = nn.Parameter(torch.ones(3, hl))
        self.b_x = nn.Parameter(torch.zeros(3, hl))
        self.g_hl = nn.Parameter(torch.ones(3, hl))
        self.g_lrec = nn.Parameter(torch.ones(3, hl))
        self.g_hin = nn.Parameter(torch.ones(3, hh))
        self.b_hin = nn.Parameter(torch.zeros(3, hh))
        self.g_hrec = nn.Parameter(torch.ones(3, hh))
        self.out = nn.Linear(hh, d, bias=False) if hh != d else nn.Identity()

    def special_init(self) -> None:
        """LN gains: 1 on the token input, 0.5 on every state-driven product (recurrent terms and
        high -> low), so the recurrence starts input-driven and contracting. With gain 1 on all
        of them the untrained recurrence is chaotic (LN makes U h unit-variance whatever the
        scale of U or h): float32 and float64 logits of a micro model differed by 0.1 after 200
        tokens; with 0.5 they agree to 1e-6. Update-gate biases +1 (states start out leaning
        towards keeping their value, common GRU/LSTM practice)."""
        with torch.no_grad():
            for g in (self.g_x, self.g_hin):
                g.fill_(1.0)
            for g in (self.g_hl, self.g_lrec, self.g_hrec):
                g.fill_(0.5)
            for b in (self.b_x, self.b_hin):
                b.zero_()
                b[1].fill_(1.0)

    def init_cache(self, batch_size: int) -> HRNNCache:
        """Zero low and high states (the same start a forward pass without a cache uses)."""
        p = self.w_x.weight
        zeros = lambda h: torch.zeros(batch_size, h, device=p.device, dtype=scan_dtype(p))  # noqa: E731
        return HRNNCache(zeros(self.opts.low_hidden), zeros(self.opts.high_hidden), 0)

    def scan(self, xn: torch.Tensor, state: HRNNCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`hierarchical_scan` of the normalised token terms xn (B, L, 3Hl) from `state`, in
        float32 with autocast disabled (`float32_scan`: a bf16 rounding at every step would
        compound over the sequence). Returns (high states (B, L, Hh), last low, last high)."""
        tbptt = self.opts.tbptt if (self.training and torch.is_grad_enabled()) else 0
        dt = scan_dtype(xn)
        with float32_scan(xn):
            mats = (self.w_high.weight, self.u_low.weight, self.w_up.weight)
            gains = (self.g_hl, self.g_lrec, self.g_hin, self.b_hin, self.g_hrec)
            return hierarchical_scan(xn.to(dt), state.low.to(dt), state.high.to(dt), *(w.to(dt) for w in mats),
                                     *(g.flatten().to(dt) for g in gains), int(self.opts.T), int(self.opts.N),
                                     int(tbptt), int(state.pos), 1e-5)

    def body(self, input_ids: torch.Tensor, cache: HRNNCache | None = None) -> BodyOutput:
        B, L = input_ids.shape
        state = cache if cache is not None else self.init_cache(B)
        xp = self.w_x(self.drop(self.tok_emb(input_ids)))  # (B, L, 3Hl): one matmul for the sequence
        xn = group_ln(xp.reshape(B * L, -1), self.g_x.flatten(), self.b_x.flatten(), 1e-5).view(B, L, -1)
        hs, low, high = self.scan(xn, state)
        hidden = self.out(self.drop(hs))
        new_cache = HRNNCache(low, high, state.pos + L) if cache is not None else None
        return BodyOutput(hidden=hidden, cache=new_cache)

    def matmul_params(self) -> int:
        """Weights applied per token: W_x and the LM head once, the fused high projection and
        the high input weight N times, the low recurrent weight N T times."""
        T, N = self.opts.T, self.opts.N
        n = self.w_x.weight.numel() + self.lm_head.weight.numel()
        n += N * (self.w_high.weight.numel() + self.w_up.weight.numel() + T * self.u_low.weight.numel())
        if isinstance(self.out, nn.Linear):
            n += self.out.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """6 x matmul_params(): the N (T + 1) cell applications per token, each counted with the
        weights it multiplies (no attention term; layer norms and gates are not counted)."""
        return 6.0 * self.matmul_params()

    def state_size(self, seq_len: int = 1024) -> int:
        """The two recurrent states; constant in seq_len."""
        return self.opts.low_hidden + self.opts.high_hidden
