"""Reservoir variants: `reservoir` (LAERC-style layered frozen reservoir + FFN) and `liquid`
(LiquidLM-style attention + frozen time-aware random features).

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
W is sparse Gaussian scaled to a true spectral radius (max |eigenvalue|, default 0.9). The LAERC
reference scales by the largest singular value instead, which leaves a true radius near 0.47.

liquid: per layer causal self-attention, then a frozen sparse random feature map of the token
state plus small sinusoidal "ripples" of the absolute position, tanh(R u + eps sin(w t + phi)),
projected back by a trainable matrix, then an FFN (LiquidLM, D. Hamner 2024; random features as
in Rahimi & Recht 2007).

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

from unified.config import ModelConfig
from unified.errors import ConfigError, UnknownNameError
from unified.layers import CausalSelfAttention, KVCache, SwiGLU, float32_scan, rms_norm, scan_dtype
from unified.model import BodyOutput, LanguageModel, register_variant

RESERVOIR_MODES = ("tanh", "linear")
_SALT_RESERVOIR, _SALT_LIQUID = 1, 2


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


def real_block_eig(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real block diagonalisation W = P D P^-1 (float64) of an n x n matrix, n even.

    Returns `lam` (n, 2): per state slot s the (re, im) of an eigenvalue, and `P` (n, n) real.
    Slots come in fixed pairs (2k, 2k+1) = (s, s ^ 1): a complex pair a +- ib with eigenvector v
    takes one slot pair (columns Re v, Im v of P; slot 2k stores a - ib, slot 2k+1 a + ib), the
    real eigenvalues (an even number, since n is) fill the remaining slot pairs two by two
    (im = 0). Then y' = D y reads y_s' = Re(lam_s) y_s - Im(lam_s) y_{s^1} for every slot, and
    D^k the same with lam_s^k: a static partner, so the scan needs no data-dependent indexing."""
    n = w.shape[0]
    evals, evecs = torch.linalg.eig(w)
    pos, real = evals.imag > 0, evals.imag == 0
    if n % 2 or 2 * int(pos.sum()) + int(real.sum()) != n:
        raise ConfigError("reservoir matrix must have even size and eigenvalues in exact conjugate pairs")
    vp, lp = evecs[:, pos], evals[pos]
    P = torch.cat([torch.stack([vp.real, vp.imag], dim=2).reshape(n, -1), evecs[:, real].real], dim=1)
    lam = torch.cat([torch.stack([lp.conj(), lp], dim=1).reshape(-1), evals[real]])
    lam = torch.stack([lam.real, lam.imag], dim=1)
    err = (w @ P - P @ block_matrix(lam)).norm() / (w.norm() * P.norm())
    if not err < 1e-8:
        raise ConfigError(f"reservoir matrix is not diagonalisable (residual {err:.1e}); try another init_seed or sparsity")
    return lam, P


def block_matrix(lam: torch.Tensor) -> torch.Tensor:
    """The real block-diagonal D of `real_block_eig`'s eigen-data `lam` (n, 2)."""
    D = torch.diag(lam[:, 0])
    idx = torch.arange(lam.shape[0], device=lam.device)
    D[idx, idx ^ 1] -= lam[:, 1]
    return D


def swap_pairs(y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """y with slots 2k and 2k+1 exchanged along `dim` (the partner y_{s^1} of every slot)."""
    dim = dim % y.dim()
    return y.unflatten(dim, (-1, 2)).flip(dim + 1).flatten(dim, dim + 1)


def eig_powers(lam: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re and Im of lam^k for k = 0..n (shape (n+1, slots)), computed in float64 and returned in
    float32: within-chunk powers only, so float32 errors stay bounded for any sequence length."""
    c = torch.complex(lam[:, 0].double(), lam[:, 1].double())
    pw = torch.cumprod(c.expand(n, -1), dim=0)
    pw = torch.cat([torch.ones_like(pw[:1]), pw])
    return pw.real.float(), pw.imag.float()


def linear_step(v: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """One step of the block-diagonal recurrence y' = D y + v (v, y: (B, n))."""
    return lam[:, 0] * y - lam[:, 1] * swap_pairs(y) + v


def linear_chunked_scan(v: torch.Tensor, y0: torch.Tensor, lam: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All states y_t = D y_{t-1} + v_t, t = 1..T, in parallel over time. v: (B, T, n), y0: (B, n).

    Within each chunk of length L, y_i = sum_{j<=i} D^{i-j} v_j is one batched matmul (batch =
    state slot) with the stacked lower-triangular Toeplitz kernels Re lam_s^(i-j) and
    Im lam_{s^1}^(i-j): y_s = K^re_s v_s - (K^im_{s^1} v_{s^1}) (the second term computed at slot
    s^1, then swapped back). Chunk-end states then carry over with D^L (a loop over T/L chunks on
    (B, n) tensors only), and every position adds D^(i+1) times the previous chunk's end state.
    Returns (states (B, T, n), last state (B, n))."""
    B, T, n = v.shape
    L = max(1, min(chunk, T))
    C = -(-T // L)
    pr, pi = (p.to(device=v.device, dtype=v.dtype) for p in eig_powers(lam, L))
    lag = torch.arange(L, device=v.device)[:, None] - torch.arange(L, device=v.device)[None, :]
    future = (lag < 0)[..., None]
    lag = lag.clamp(min=0)
    kernel = torch.cat([pr[lag].masked_fill(future, 0.0), swap_pairs(pi)[lag].masked_fill(future, 0.0)], dim=0)
    vs = F.pad(v, (0, 0, 0, C * L - T)).view(B, C, L, n).permute(3, 2, 0, 1).reshape(n, L, B * C)
    out = torch.bmm(kernel.permute(2, 0, 1).contiguous(), vs)  # (n, 2L, B*C)
    intra = (out[:, :L] - swap_pairs(out[:, L:], dim=0)).view(n, L, B, C).permute(2, 3, 1, 0)  # (B, C, L, n)
    ends, y = [y0], y0
    for c in range(C - 1):
        y = pr[L] * y - pi[L] * swap_pairs(y) + intra[:, c, L - 1]
        ends.append(y)
    prev = torch.stack(ends, dim=1)[:, :, None]  # (B, C, 1, n): state before each chunk
    ys = intra + pr[1:] * prev - pi[1:] * swap_pairs(prev)
    ys = ys.reshape(B, C * L, n)[:, :T]
    return ys, ys[:, -1]


def tanh_scan(pre: torch.Tensor, h: torch.Tensor, w: torch.Tensor, leak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaky echo-state recurrence h_t = lerp(h_{t-1}, tanh(pre_t + W h_{t-1}), leak) over time.
    pre: (B, T, n) input drive (precomputed for the whole sequence), h: (B, n), w: (n, n).
    A plain loop of addmm + tanh: on CPU as fast as the fused RNN kernel and ~2x faster than a
    TorchScript loop (measured at micro scale)."""
    wt, outs = w.t(), []
    for p in pre.unbind(1):
        new = torch.tanh(torch.addmm(p, h, wt))
        h = new if leak == 1.0 else torch.lerp(h, new, leak)
        outs.append(h)
    return torch.stack(outs, dim=1), h


def fused_rnn_tanh(u: torch.Tensor, h0: torch.Tensor, w_in: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = tanh(W_in u_t + W h_{t-1}) by PyTorch's fused single-layer RNN kernel (what
    nn.RNN(nonlinearity='tanh', bias=False) calls), with our frozen tensors as its weights."""
    train = torch.is_grad_enabled()  # cuDNN keeps its backward workspace only in train mode
    out, h = torch.rnn_tanh(u, h0[None], [w_in, w], False, 1, 0.0, train, False, True)
    return out, h[0]


def _frozen(*shape: int) -> nn.Parameter:
    """An uninitialised frozen parameter (filled by `init_frozen`; left empty on meta)."""
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


def _fill(param: nn.Parameter, value: torch.Tensor) -> None:
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
        self.w_in, self.w = _frozen(n, d_model), _frozen(n, n)

    def init_frozen(self, gen: torch.Generator, opts: ReservoirOptions) -> None:
        n, d = self.w_in.shape
        w = sparse_recurrent_matrix(gen, n, opts.sparsity)
        w_in = torch.randn(n, d, generator=gen, dtype=torch.float64) * (opts.input_scaling / math.sqrt(d))
        _fill(self.w, w * (opts.spectral_radius / spectral_radius(w)))
        _fill(self.w_in, w_in)

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
        self.lam, self.w_in, self.w_out = _frozen(n, 2), _frozen(n, d_model), _frozen(n, n)

    def init_frozen(self, gen: torch.Generator, opts: ReservoirOptions) -> None:
        n, d = self.w_in.shape
        w = sparse_recurrent_matrix(gen, n, opts.sparsity)  # the same W as tanh mode for this seed
        w_in = torch.randn(n, d, generator=gen, dtype=torch.float64) * (opts.input_scaling / math.sqrt(d))
        lam, P = real_block_eig(w)  # one eigendecomposition; scaling W scales lam, not P
        lam = lam * (opts.spectral_radius / torch.linalg.vector_norm(lam, dim=1).max())
        b = torch.linalg.solve(P, w_in)
        if not torch.isfinite(b).all():
            raise ConfigError("reservoir eigenvector matrix is singular; try another init_seed or sparsity")
        _fill(self.lam, lam)
        _fill(self.w_out, P)
        _fill(self.w_in, b)

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


@register_variant("reservoir", aliases=("laerc",))
class ReservoirLM(LanguageModel):
    """Stack of frozen-reservoir + readout + FFN blocks (LAERC shape, true spectral radius)."""

    Options = ReservoirOptions
    eval_overridable = ("chunk_size",)

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
                block.reservoir.init_frozen(frozen_generator(self.cfg.init_seed, i, _SALT_RESERVOIR), self.opts)

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


# ---- liquid (LiquidLM) ---------------------------------------------------------------------------
@dataclass
class LiquidOptions:
    """reservoir_size: random features per layer (0 = `default_reservoir_size`); sparsity:
    fraction of zero feature weights; input_scaling: std of R u for unit-RMS u; ripple_scale:
    amplitude of the sinusoidal position term inside the feature map; ripple_base: ripple
    frequencies are ripple_base^-U, U ~ Uniform(0, 1)."""

    reservoir_size: int = 0
    sparsity: float = 0.9
    input_scaling: float = 1.0
    ripple_scale: float = 0.1
    ripple_base: float = 10000.0


class TimeAwareReservoir(nn.Module):
    """proj(tanh(R u + eps sin(w t + phi))): R (n, d) frozen sparse, w / phi frozen per feature,
    t the absolute position, proj trainable."""

    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.w_res, self.freq, self.phase = _frozen(n, d_model), _frozen(n), _frozen(n)
        self.proj = nn.Linear(n, d_model, bias=False)
        self.proj.residual_scaled = True

    def init_frozen(self, gen: torch.Generator, opts: LiquidOptions) -> None:
        n, d = self.w_res.shape
        density = 1.0 - opts.sparsity
        w = torch.randn(n, d, generator=gen, dtype=torch.float64)
        w = w * (torch.rand(n, d, generator=gen, dtype=torch.float64) < density)
        _fill(self.w_res, w * (opts.input_scaling / math.sqrt(d * density)))
        _fill(self.freq, opts.ripple_base ** -torch.rand(n, generator=gen, dtype=torch.float64))
        _fill(self.phase, 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64))

    def forward(self, u: torch.Tensor, pos0: int, ripple_scale: float) -> torch.Tensor:
        t = torch.arange(pos0, pos0 + u.shape[1], device=u.device, dtype=torch.float32)
        ripple = torch.sin(t[:, None] * self.freq.float() + self.phase.float()).to(u.dtype)
        return self.proj(torch.tanh(F.linear(u, self.w_res) + ripple_scale * ripple))


class LiquidBlock(nn.Module):
    """x += attn(norm x); x += time-aware reservoir(norm x); x += FFN(norm x)."""

    def __init__(self, cfg: ModelConfig, opts: LiquidOptions):
        super().__init__()
        self.norm1 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.reservoir = TimeAwareReservoir(cfg.d_model, opts.reservoir_size)
        self.norm3 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int, pos0: int, opts: LiquidOptions) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cache, layer, pos=pos0))
        x = x + self.drop(self.reservoir(self.norm2(x), pos0, opts.ripple_scale))
        return x + self.ffn(self.norm3(x))


@register_variant("liquid", aliases=("liquidlm",))
class LiquidLM(LanguageModel):
    """Attention + frozen time-aware random-feature reservoir + FFN per layer (LiquidLM shape)."""

    Options = LiquidOptions

    def __init__(self, cfg: ModelConfig, opts: LiquidOptions):
        opts.reservoir_size = opts.reservoir_size or default_reservoir_size(cfg.d_model)
        if opts.reservoir_size < 1 or not 0.0 <= opts.sparsity < 1.0 or opts.input_scaling <= 0 or opts.ripple_base <= 0:
            raise ConfigError(f"liquid: need reservoir_size >= 1, sparsity in [0, 1), input_scaling > 0, "
                              f"ripple_base > 0; got {opts}")
        super().__init__(cfg, opts)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(LiquidBlock(cfg, opts) for _ in range(cfg.n_layers))

    def special_init(self) -> None:
        """Draw the frozen feature maps from per-layer generators (skipped on meta)."""
        for i, block in enumerate(self.blocks):
            if block.reservoir.w_res.is_meta:
                continue
            with torch.device("cpu"):
                block.reservoir.init_frozen(frozen_generator(self.cfg.init_seed, i, _SALT_LIQUID), self.opts)

    def body(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> BodyOutput:
        x = self.drop(self.tok_emb(input_ids))
        pos0 = cache.pos if cache is not None else 0
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, pos0, self.opts)
        return BodyOutput(hidden=x, cache=cache)

    def init_cache(self, batch_size: int) -> KVCache:
        p = self.tok_emb.weight
        return KVCache(len(self.blocks), batch_size, self.cfg.n_kv_heads, self.cfg.head_dim, p.device, p.dtype)

    def attention_layers(self) -> int:
        return len(self.blocks)

    def flops_per_token(self, seq_len: int) -> float:
        """6 N_trainable + 4 N_frozen (feature maps R: forward + input gradient only)
        + 12 n_layers d T (attention)."""
        frozen_mm = sum(b.reservoir.w_res.numel() for b in self.blocks)
        trainable = self.matmul_params() - self.num_frozen_params()
        return float(6 * trainable + 4 * frozen_mm + 12 * self.attention_layers() * self.cfg.d_model * seq_len)

    def state_size(self, seq_len: int = 1024) -> int:
        return 2 * self.attention_layers() * self.cfg.n_kv_heads * self.cfg.head_dim * seq_len
