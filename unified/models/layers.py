"""Blocks shared by the variants: RMSNorm, rotary embeddings, causal attention with a KV cache,
and the SwiGLU feed-forward layer.

Attention runs through `F.scaled_dot_product_attention` with fused QKV and optional grouped-query
attention. Positions are absolute (the cache's offset is added), so cached decoding reproduces
the full forward pass exactly.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from unified.models.config import ModelConfig
from unified.ops.precision import small_matmul_precision


def rms_norm(d: int, eps: float = 1e-5) -> nn.RMSNorm:
    """Root-mean-square normalisation with a learned gain (Zhang & Sennrich 2019)."""
    return nn.RMSNorm(d, eps=eps)


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of rotary embeddings (Su et al. 2021) for integer `positions`, (T, head_dim/2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


_ROPE_TABLES: dict[tuple[int, float, str], tuple[torch.Tensor, torch.Tensor]] = {}


def cached_rope_tables(start: int, length: int, head_dim: int, base: float,
                       device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """`rope_tables` of positions start .. start+length-1, sliced from one table per (head_dim,
    base, device) that grows by doubling: no per-layer, per-step recomputation, and the full
    forward pass and cached decoding read identical values for every position."""
    key, need = (head_dim, float(base), str(device)), start + length
    if torch.compiler.is_compiling():  # no global state in traced code; the graph computes them once
        return rope_tables(torch.arange(start, need, device=device), head_dim, base)
    table = _ROPE_TABLES.get(key)
    if table is None or table[0].shape[0] < need:
        n = max(need, 2 * table[0].shape[0] if table is not None else 1024)
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor even if first built in inference mode
            table = rope_tables(torch.arange(n, device=device), head_dim, base)
        _ROPE_TABLES[key] = table
    return table[0][start:need], table[1][start:need]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of x (B, H, T, D) by position-dependent angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[None, None], sin[None, None]
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


class TransformerCache:
    """Keys and values of past positions for a stack of attention layers.

    Storage grows by doubling, so decoding past the trained context works for RoPE models.
    `pos` is the number of positions already stored (identical for every layer).
    """

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, head_dim: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, capacity: int = 64):
        shape = (batch_size, n_kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.lengths = [0] * n_layers

    @property
    def pos(self) -> int:
        return self.lengths[0] if self.lengths else 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values (B, Hkv, T, D) for `layer`; return all keys/values so far."""
        start, t = self.lengths[layer], k.shape[2]
        need = start + t
        if need > self.k[layer].shape[2]:
            cap = max(need, 2 * self.k[layer].shape[2])
            for store in (self.k, self.v):
                old = store[layer]
                grown = old.new_zeros(old.shape[0], old.shape[1], cap, old.shape[3])
                grown[:, :, :start] = old[:, :, :start]
                store[layer] = grown
        self.k[layer][:, :, start:need] = k.to(self.k[layer].dtype)
        self.v[layer][:, :, start:need] = v.to(self.v[layer].dtype)
        self.lengths[layer] = need
        return self.k[layer][:, :, :need], self.v[layer][:, :, :need]

    def floats_per_sequence(self) -> int:
        """Number of cached floats per sequence (grows with length)."""
        return sum(2 * k.shape[1] * n * k.shape[3] for k, n in zip(self.k, self.lengths))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused QKV, RoPE, optional GQA and a KV cache.

    `window` (optional) limits each position to the last `window` positions (sliding window).
    """

    def __init__(self, cfg: ModelConfig, window: int | None = None, use_rope: bool = True):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.rope_base, self.use_rope, self.window = cfg.rope_base, use_rope, window
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.proj.residual_scaled = True  # init: scaled down like GPT-2's residual projections
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: TransformerCache | None = None, layer: int = 0,
                pos: int | None = None) -> torch.Tensor:
        """x: (B, T, d). With a cache, x holds the positions after those already cached."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim, self.n_kv_heads * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        start = (cache.lengths[layer] if cache is not None else 0) if pos is None else pos
        if self.use_rope:
            cos, sin = cached_rope_tables(start, T, self.head_dim, self.rope_base, x.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        y = attend(q, k, v, q_start=start, window=self.window,
                   dropout=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


# Under `torch.set_float32_matmul_precision("medium")` (oneDNN float32 matmuls, what `auto` picks
# on AVX-512 CPUs without AMX) SDPA's CPU flash kernel gets 1.1x (nano, 8x8x256x64) to 7x (4 heads
# of 32, 12x64) slower per forward + backward (issue 20; bench/RESULTS.md "Small-model step").
# Float32 CPU attention then runs the flash kernel under "highest" (`_FlashAtHighest`: the very
# values and gradients SDPA computes under "highest"), or, for the cases it does not take (masks,
# GQA, dropout), SDPA's math backend, whose matmuls take the oneDNN path, for at most this many
# query-key pairs per head (it stores the (B, H, T, S) weights).
_MATH_ATTENTION_MAX_PAIRS = 512 * 512


class _FlashAtHighest(torch.autograd.Function):
    """Causal SDPA (CPU flash kernel) whose forward and backward run under "highest"."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with small_matmul_precision(q.device):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        with small_matmul_precision(q.device):
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad, q, k, v, out, lse, 0.0, True)


def _onednn_fp32_cpu(q: torch.Tensor) -> bool:
    """Float32 attention on CPU while oneDNN computes float32 matmuls (see above), not traced."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and not torch.compiler.is_compiling()
            and torch.backends.mkldnn.matmul.fp32_precision == "bf16")


def _sdpa_backend(q: torch.Tensor, S: int) -> contextlib.AbstractContextManager:
    """SDPA's math backend for the float32 CPU attention `_FlashAtHighest` does not take while
    oneDNN computes float32 matmuls, up to `_MATH_ATTENTION_MAX_PAIRS`; otherwise no constraint."""
    if _onednn_fp32_cpu(q) and q.shape[2] * S <= _MATH_ATTENTION_MAX_PAIRS:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int = 0, window: int | None = None,
           dropout: float = 0.0, prefix: int = 0) -> torch.Tensor:
    """Causal scaled-dot-product attention where query i sits at absolute position q_start + i and
    key j at position j - prefix; keys with j < prefix (e.g. memory tokens) are visible to all."""
    if (window is None and prefix == 0 and q_start == 0 and dropout == 0.0 and q.shape == k.shape == v.shape
            and _onednn_fp32_cpu(q)):
        return _FlashAtHighest.apply(q, k, v)
    with _sdpa_backend(q, k.shape[2]):
        return _attend(q, k, v, q_start, window, dropout, prefix)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int, window: int | None, dropout: float,
            prefix: int) -> torch.Tensor:
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if window is None and prefix == 0 and q_start == 0 and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, enable_gqa=gqa)
    if window is None and prefix == 0 and T == 1:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, enable_gqa=gqa)
    qpos = torch.arange(q_start, q_start + T, device=q.device)[:, None]
    kpos = torch.arange(S, device=q.device)[None, :] - prefix
    mask = kpos <= qpos
    if window is not None:
        mask = mask & (kpos > qpos - window)
    if prefix:
        mask = mask | (kpos < 0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa)


class SwiGLU(nn.Module):
    """Gated feed-forward layer (Shazeer 2020): W2 (silu(W1 x) * W3 x)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w2.residual_scaled = True
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.drop(self.w2(F.silu(a) * b))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: ModelConfig, window: int | None = None):
        super().__init__()
        self.norm1 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg, window=window)
        self.norm2 = rms_norm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: TransformerCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cache, layer))
        return x + self.ffn(self.norm2(x))


def init_weights(module: nn.Module, n_layers: int) -> None:
    """GPT-2 style initialisation: N(0, 0.02) for linear/embedding weights, residual output
    projections scaled by 1/sqrt(2 n_layers), zero biases. Frozen parameters are left alone."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.requires_grad:
            std = 0.02 / math.sqrt(2 * n_layers) if getattr(m, "residual_scaled", False) else 0.02
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
