"""Reservoir variant `reservoir`: a LAERC-style layered frozen reservoir + FFN (the `liquid`
variant, `unified.models.liquid`, shares its frozen-weight helpers).

reservoir: each block normalises its input u_t, drives a *frozen* random recurrent reservoir
with it, reads the reservoir state out with a small trainable MLP, mixes readout and input with a
learned per-channel sigmoid gate, then applies a SwiGLU feed-forward layer (pre-norm residuals).
Two reservoir modes (`reservoir_mode`):
  tanh   leaky echo-state network (Jaeger 2001; Lukosevicius 2012, "A practical guide to
         applying echo state networks"): x_t = (1-a) x_{t-1} + a tanh(W_in u_t + W x_{t-1}).
         W_in u is one matmul over the whole sequence; the time loop is the only sequential part.
  linear x_t = (1-a) x_{t-1} + a (W x_{t-1} + W_in u_t), the nonlinearity lives in the readout.
         W is diagonalised once at init into real 2x2 rotation-scale blocks (W = P D P^-1, the
         real form of the complex eigendecomposition), so the recurrence runs as a chunked
         parallel scan over time like diagonal linear RNNs / SSMs (Orvieto et al. 2023, LRU).
With h the block's input (the residual stream), u_t = norm(h_t), x_t the reservoir state above
(a = `leak_rate`) and g a learned per-channel gate, the readout, mix and FFN are
    r_t = W_2 gelu(W_1 norm(x_t));   h <- h + g r_t + (1 - g) u_t,  g = sigmoid(gate);   h <- h + FFN(norm(h))
In linear mode the state is kept in W's real eigenbasis, y_t = D_a y_{t-1} + a B u_t with
D_a = (1-a) I + a D and B = P^-1 W_in, and read out as x_t = P y_t; each slot s has a fixed
partner s^1 (its conjugate, or the other real eigenvalue), so a step
y_s <- Re(lam_s) y_s - Im(lam_s) y_{s^1} + v_s needs no data-dependent indexing.
W is sparse Gaussian scaled to a true spectral radius (max |eigenvalue|, default 0.9). The LAERC
reference scales by the largest singular value instead, which leaves a true radius near 0.47.
FLOPs per token: 6 N_trainable + 4 N_frozen (frozen weights need the forward pass and the input
gradient, no weight gradient), + 12 n (L + 1) per layer for linear mode's chunk kernels.

Frozen weights are `nn.Parameter(requires_grad=False)`: in the state_dict and checkpoints, counted
by `num_params()` but not `num_params(trainable_only=True)`. They come from a dedicated CPU
`torch.Generator` seeded from (init_seed, layer), so they do not depend on anything else built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from unified.errors import ConfigError, UnknownNameError
from unified.models.base import BodyOutput, LanguageModel, register_variant
from unified.models.config import ModelConfig
from unified.models.layers import SwiGLU, rms_norm
from unified.ops.linear_scan import block_matrix, linear_chunked_scan, linear_step, real_block_eig
from unified.ops.precision import float32_scan, scan_dtype
from unified.ops.tanh_scan import fused_rnn_tanh, tanh_scan

RESERVOIR_MODES = ("tanh", "linear")
SALT_RESERVOIR, SALT_LIQUID = 1, 2  # frozen_generator salts, one per variant


# ---- frozen random weights ---------------------------------------------------------------------
def frozen_generator(init_seed: int, layer: int, salt: int) -> torch.Generator:
    """CPU generator for the frozen weights of one layer: a function of (init_seed, layer, salt)
    only, so frozen weights are identical whatever else is built or drawn from the global RNG."""
    return torch.Generator(device="cpu").manual_seed(int(init_seed) * 1_000_003 + salt * 10_007 + layer)


def default_reservoir_size(d_model: int) -> int:
    """Reservoir width: 4 d_model up to 1024 units, then 2 d_model (micro 1024, 125M 1536, 1B 4096)."""
    return min(4 * d_model, max(2 * d_model, 1024))


def spectral_radius(w: torch.Tensor) -> float:
    """True spectral radius max |eigenvalue| of a square matrix (computed in float64)."""
    return torch.linalg.eigvals(w.detach().double().cpu()).abs().max().item()


def sparse_recurrent_matrix(gen: torch.Generator, n: int, sparsity: float) -> torch.Tensor:
    """Sparse Gaussian n x n matrix (a fraction `sparsity` of zeros), float64, unscaled. A random
    permutation is always kept nonzero so every row and column has an entry: no structural zero
    eigenvalues, hence (almost surely) diagonalisable."""
    w = torch.randn(n, n, generator=gen, dtype=torch.float64)
    keep = torch.rand(n, n, generator=gen, dtype=torch.float64) >= sparsity
    keep[torch.arange(n), torch.randperm(n, generator=gen)] = True
    return w * keep


def frozen_parameter(*shape: int) -> nn.Parameter:
    """An uninitialised frozen parameter (filled by `init_frozen`; left empty on meta)."""
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


def fill_frozen(param: nn.Parameter, value: torch.Tensor) -> None:
    """Copy `value` into the frozen parameter `param` (outside autograd)."""
    with torch.no_grad():
        param.copy_(value)


# ---- reservoir (LAERC) -------------------------------------------------------------------------
@dataclass
class ReservoirOptions:
    """reservoir_mode: tanh (nonlinear leaky ESN, sequential) or linear (diagonalised, parallel);
    reservoir_size: units per layer (0 = `default_reservoir_size`); spectral_radius: true max
    |eigenvalue| of W; sparsity: fraction of zero recurrent weights; leak_rate: a in (0, 1];
    input_scaling: std of the input drive W_in u for unit-RMS u; readout_hidden: readout MLP width
    (0 = d_model); chunk_size: scan chunk length of the linear mode (any value gives the same
    result up to rounding; changeable at evaluation)."""

    reservoir_mode: str = "tanh"
    reservoir_size: int = 0
    spectral_radius: float = 0.9
    sparsity: float = 0.9
    leak_rate: float = 1.0
    input_scaling: float = 1.0
    readout_hidden: int = 0
    chunk_size: int = 32


class TanhReservoir(nn.Module):
    """Frozen leaky echo-state reservoir: W_in (n, d) dense, W (n, n) sparse with radius rho."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.w_in, self.w = frozen_parameter(n, d_model), frozen_parameter(n, n)

    def init_frozen(self, gen: torch.Generator, opts: ReservoirOptions) -> None:
        n, d = self.w_in.shape
        w = sparse_recurrent_matrix(gen, n, opts.sparsity)
        w_in = torch.randn(n, d, generator=gen, dtype=torch.float64) * (opts.input_scaling / math.sqrt(d))
        fill_frozen(self.w, w * (opts.spectral_radius / spectral_radius(w)))
        fill_frozen(self.w_in, w_in)

    def recurrent_matrix(self) -> torch.Tensor:
        """The recurrent matrix W in float64."""
        return self.w.detach().double().cpu()

    def forward(self, u: torch.Tensor, h0: torch.Tensor, opts: ReservoirOptions) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (B, T, d), h0: (B, n) -> states (B, T, n) in u's dtype, last state (float32).
        On CUDA with leak 1 the fused RNN kernel (cuDNN) runs the whole recurrence; elsewhere
        `tanh_scan` (on CPU the loop is as fast as the fused kernel, and it also covers leak
        < 1). Both run in float32 with autocast disabled (`float32_scan`), the input drive too."""
        dt = scan_dtype(u)
        with float32_scan(u):
            uf, h0 = u.to(dt), h0.to(dt)
            if u.is_cuda and opts.leak_rate == 1.0:
                out, h = fused_rnn_tanh(uf, h0, self.w_in.to(dt), self.w.to(dt))
            else:
                out, h = tanh_scan(F.linear(uf, self.w_in.to(dt)), h0, self.w.to(dt), opts.leak_rate)
        return out.to(u.dtype), h

    def frozen_matmul_params(self) -> int:
        return self.w_in.numel() + self.w.numel()


class LinearReservoir(nn.Module):
    """Frozen linear reservoir in its real eigenbasis: y_t = D_a y_{t-1} + a B u_t, x_t = P y_t,
    with D_a = (1-a) I + a D. Stores lam (n, 2), B = P^-1 W_in (n, d) and P (n, n)."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.lam, self.w_in, self.w_out = frozen_parameter(n, 2), frozen_parameter(n, d_model), frozen_parameter(n, n)

    def init_frozen(self, gen: torch.Generator, opts: ReservoirOptions) -> None:
        n, d = self.w_in.shape
        w = sparse_recurrent_matrix(gen, n, opts.sparsity)  # the same W as tanh mode for this seed
        w_in = torch.randn(n, d, generator=gen, dtype=torch.float64) * (opts.input_scaling / math.sqrt(d))
        lam, P = real_block_eig(w)  # one eigendecomposition; scaling W scales lam, not P
        lam = lam * (opts.spectral_radius / torch.linalg.vector_norm(lam, dim=1).max())
        b = torch.linalg.solve(P, w_in)
        if not torch.isfinite(b).all():
            raise ConfigError("reservoir eigenvector matrix is singular; try another init_seed or sparsity")
        fill_frozen(self.lam, lam)
        fill_frozen(self.w_out, P)
        fill_frozen(self.w_in, b)

    def recurrent_matrix(self) -> torch.Tensor:
        """W = P D P^-1 rebuilt in float64 from the stored (float32) eigen-data."""
        lam, P = self.lam.detach().double().cpu(), self.w_out.detach().double().cpu()
        return P @ block_matrix(lam) @ torch.linalg.inv(P)

    def leaky_lam(self, a: float) -> torch.Tensor:
        """Eigen-data of (1-a) I + a W (same eigenvectors)."""
        lam = self.lam.float()
        return torch.stack([(1.0 - a) + a * lam[:, 0], a * lam[:, 1]], dim=1)

    def drive(self, u: torch.Tensor, a: float) -> torch.Tensor:
        """Input drive a B u_t in the eigenbasis, float32 (float64 for float64 u), for all
        positions: (B, T, n). Call it inside `float32_scan` (autocast would make it bf16)."""
        dt = scan_dtype(u)
        return a * F.linear(u.to(dt), self.w_in.to(dt))

    def step(self, v: torch.Tensor, y: torch.Tensor, a: float) -> torch.Tensor:
        """Sequential form (decoding): one step of the eigenbasis state."""
        return linear_step(v, y, self.leaky_lam(a))

    def forward(self, u: torch.Tensor, y0: torch.Tensor, opts: ReservoirOptions) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (B, T, d), y0: (B, n) eigenbasis state -> states x = P y (B, T, n) in u's dtype,
        last y. Drive, scan and P y run in float32 with autocast disabled (`float32_scan`)."""
        a, dt = opts.leak_rate, scan_dtype(u)
        with float32_scan(u):
            v = self.drive(u, a)
            if u.shape[1] == 1:
                y = self.step(v[:, 0], y0.to(dt), a)
                ys = y[:, None]
            else:
                ys, y = linear_chunked_scan(v, y0.to(dt), self.leaky_lam(a), opts.chunk_size)
            x = F.linear(ys, self.w_out.to(dt))
        return x.to(u.dtype), y

    def frozen_matmul_params(self) -> int:
        return self.w_in.numel() + self.w_out.numel()


class ReservoirBlock(nn.Module):
    """u = norm(x); r = MLP(norm(reservoir(u))); x += g r + (1-g) u with g = sigmoid(gate) per
    channel; x += FFN(norm(x))."""

    def __init__(self, cfg: ModelConfig, opts: ReservoirOptions):
        super().__init__()
        n, h = opts.reservoir_size, opts.readout_hidden
        self.norm1 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.reservoir = (TanhReservoir if opts.reservoir_mode == "tanh" else LinearReservoir)(cfg.d_model, n)
        self.norm_state = rms_norm(n, cfg.norm_eps)
        self.read_in = nn.Linear(n, h, bias=False)
        self.read_out = nn.Linear(h, cfg.d_model, bias=False)
        self.read_out.residual_scaled = True
        self.gate = nn.Parameter(torch.zeros(cfg.d_model))
        self.norm2 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, state: torch.Tensor, opts: ReservoirOptions) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.norm1(x)
        states, last = self.reservoir(u, state, opts)
        r = self.read_out(F.gelu(self.read_in(self.norm_state(states))))
        g = torch.sigmoid(self.gate)
        x = x + self.drop(g * r + (1.0 - g) * u)
        return x + self.ffn(self.norm2(x)), last


class ReservoirCache:
    """Decoding state of the reservoir stack: one (B, n) state per layer and the positions seen."""

    def __init__(self, states: list[torch.Tensor]):
        self.states, self.pos = states, 0

    def floats_per_sequence(self) -> int:
        return sum(s.shape[1] for s in self.states)


@register_variant("reservoir")
class ReservoirLM(LanguageModel):
    """Stack of frozen-reservoir + readout + FFN blocks (LAERC shape, true spectral radius)."""

    Options = ReservoirOptions
    eval_overridable = ("chunk_size",)

    @property
    def parallel_in_time(self) -> bool:
        """The linear mode is a parallel scan; the tanh mode loops over positions."""
        return self.opts.reservoir_mode == "linear"

    def __init__(self, cfg: ModelConfig, opts: ReservoirOptions):
        if opts.reservoir_mode not in RESERVOIR_MODES:
            raise UnknownNameError("reservoir_mode", opts.reservoir_mode, RESERVOIR_MODES)
        opts.reservoir_size = opts.reservoir_size or default_reservoir_size(cfg.d_model)
        opts.readout_hidden = opts.readout_hidden or cfg.d_model
        checks = [(opts.reservoir_size >= 2, "reservoir_size must be >= 2 (0 = scale default)"),
                  (opts.readout_hidden >= 1, "readout_hidden must be >= 1 (0 = d_model)"),
                  (opts.spectral_radius > 0, "spectral_radius must be > 0"),
                  (0.0 <= opts.sparsity < 1.0, "sparsity must be in [0, 1)"),
                  (0.0 < opts.leak_rate <= 1.0, "leak_rate must be in (0, 1]"),
                  (opts.input_scaling > 0, "input_scaling must be > 0"),
                  (opts.chunk_size >= 1, "chunk_size must be >= 1"),
                  (opts.reservoir_mode == "tanh" or opts.reservoir_size % 2 == 0,
                   "reservoir_size must be even in linear mode (eigenvalue slot pairs)")]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"reservoir: {msg}, got {opts}")
        super().__init__(cfg, opts)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ReservoirBlock(cfg, opts) for _ in range(cfg.n_layers))

    def special_init(self) -> None:
        """Draw the frozen reservoirs from per-layer generators (skipped on meta); gates at 0.5."""
        for i, block in enumerate(self.blocks):
            nn.init.zeros_(block.gate)
            if block.reservoir.w_in.is_meta:
                continue
            with torch.device("cpu"):
                block.reservoir.init_frozen(frozen_generator(self.cfg.init_seed, i, SALT_RESERVOIR), self.opts)

    def body(self, input_ids: torch.Tensor, cache: ReservoirCache | None = None) -> BodyOutput:
        x = self.drop(self.tok_emb(input_ids))
        states = cache.states if cache is not None else self.init_cache(input_ids.shape[0]).states
        for i, block in enumerate(self.blocks):
            x, last = block(x, states[i], self.opts)
            if cache is not None:
                cache.states[i] = last
        if cache is not None:
            cache.pos += input_ids.shape[1]
        return BodyOutput(hidden=x, cache=cache)

    def init_cache(self, batch_size: int) -> ReservoirCache:
        p = self.tok_emb.weight  # states are kept in the scans' float32 (float64 for a float64 model)
        return ReservoirCache([torch.zeros(batch_size, self.opts.reservoir_size, device=p.device, dtype=scan_dtype(p))
                               for _ in self.blocks])

    def flops_per_token(self, seq_len: int) -> float:
        """6 N_trainable + 4 N_frozen (frozen weights: forward + input gradient, no weight
        gradient) + linear mode's chunked scan, 12 n (L + 1) per layer (dense L x 2L kernels, x3
        for backward). N counts matmul weights as `matmul_params` does; the tanh recurrence W
        (n^2) is part of N_frozen."""
        frozen_mm = sum(b.reservoir.frozen_matmul_params() for b in self.blocks)
        trainable = self.matmul_params() - self.num_frozen_params()
        flops = 6 * trainable + 4 * frozen_mm
        if self.opts.reservoir_mode == "linear":
            L = min(self.opts.chunk_size, seq_len)
            flops += 12 * self.opts.reservoir_size * (L + 1) * len(self.blocks)
        return float(flops)

    def state_size(self, seq_len: int = 1024) -> int:
        return len(self.blocks) * self.opts.reservoir_size
