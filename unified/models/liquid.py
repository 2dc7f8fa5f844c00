"""Liquid variant `liquid` (LiquidLM shape): attention + frozen time-aware random features.

liquid: per layer causal self-attention, then a frozen sparse random feature map of the token
state plus small sinusoidal "ripples" of the absolute position, tanh(R u + eps sin(w t + phi)),
projected back by a trainable matrix, then an FFN (LiquidLM, D. Hamner 2024; random features as
in Rahimi & Recht 2007). Per layer, pre-norm residuals:

    x <- x + Attn(norm(x))                                         (causal, RoPE, KV cache)
    x <- x + proj(tanh(R norm(x)_t + eps sin(w t + phi)))          eps = ripple_scale
    x <- x + FFN(norm(x))

R (n x d) is frozen, sparse (a fraction `sparsity` of zeros) and scaled so that R u has std
`input_scaling` for a unit-RMS u; the frequencies w = ripple_base^-U with U ~ Uniform(0, 1) and
the phases phi ~ Uniform(0, 2 pi) are frozen per feature; t is the absolute position (the cache
offset in decoding); proj (d x n) is trainable. FLOPs per token: 6 N_trainable + 4 N_frozen +
12 n_layers d T (attention); the decoding state is the KV cache.

Frozen weights are `nn.Parameter(requires_grad=False)` drawn from a dedicated CPU generator
seeded from (init_seed, layer), as in `unified.models.reservoir`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from unified.errors import ConfigError
from unified.models.base import BodyOutput, LanguageModel, register_variant
from unified.models.config import ModelConfig
from unified.models.layers import CausalSelfAttention, SwiGLU, TransformerCache, rms_norm
from unified.models.reservoir import (SALT_LIQUID, default_reservoir_size, fill_frozen, frozen_generator,
                                      frozen_parameter)


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
        self.w_res, self.freq, self.phase = frozen_parameter(n, d_model), frozen_parameter(n), frozen_parameter(n)
        self.proj = nn.Linear(n, d_model, bias=False)
        self.proj.residual_scaled = True

    def init_frozen(self, gen: torch.Generator, opts: LiquidOptions) -> None:
        n, d = self.w_res.shape
        density = 1.0 - opts.sparsity
        w = torch.randn(n, d, generator=gen, dtype=torch.float64)
        w = w * (torch.rand(n, d, generator=gen, dtype=torch.float64) < density)
        fill_frozen(self.w_res, w * (opts.input_scaling / math.sqrt(d * density)))
        fill_frozen(self.freq, opts.ripple_base ** -torch.rand(n, generator=gen, dtype=torch.float64))
        fill_frozen(self.phase, 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64))

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

    def forward(self, x: torch.Tensor, cache: TransformerCache | None, layer: int, pos0: int,
                opts: LiquidOptions) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cache, layer, pos=pos0))
        x = x + self.drop(self.reservoir(self.norm2(x), pos0, opts.ripple_scale))
        return x + self.ffn(self.norm3(x))


@register_variant("liquid")
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
                block.reservoir.init_frozen(frozen_generator(self.cfg.init_seed, i, SALT_LIQUID), self.opts)

    def body(self, input_ids: torch.Tensor, cache: TransformerCache | None = None) -> BodyOutput:
        x = self.drop(self.tok_emb(input_ids))
        pos0 = cache.pos if cache is not None else 0
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, pos0, self.opts)
        return BodyOutput(hidden=x, cache=cache)

    def init_cache(self, batch_size: int) -> TransformerCache:
        p = self.tok_emb.weight
        return TransformerCache(len(self.blocks), batch_size, self.cfg.n_kv_heads, self.cfg.head_dim, p.device, p.dtype)

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
