"""State-space variants: `ssm` (a stack of Mamba-2 blocks) and `ssm_mem` (Mamba-2 blocks with
causal attention blocks interleaved, plus learned memory tokens).

The Mamba-2 mixer follows Dao & Gu 2024 ("Transformers are SSMs", arXiv:2405.21060):
    [z, xBC, dt] = W_in u;  xBC = silu(causal_depthwise_conv(xBC));  [x, B, C] = xBC
    dt = softplus(dt + dt_bias);  A = -exp(A_log)   (one scalar decay per head)
    y = SSD(x, dt, A, B, C) + D x;  out = W_out RMSNorm(y * silu(z))
The scan itself (chunked for training/prefill, an O(1) step for decoding, mamba-ssm kernels on
CUDA when installed) and the causal conv (causal-conv1d on CUDA when installed) are in
`ssd_scan.py`; `kernel_backends` says which ran (results metadata, summary.json). Each layer is pre-norm: x + mixer(norm(x)), followed by
a SwiGLU MLP (x + mlp(norm(x))) unless `mlp=False`, so a layer has roughly the parameters of a
transformer layer and the ladder compares variants at equal depth.

Decoding state per SSM layer: the last (d_conv - 1) conv inputs and the (heads, headdim, d_state)
SSM state, whatever the sequence length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from unified.errors import require
from unified.models.base import BodyOutput, LanguageModel, register_variant
from unified.models.layers import TransformerCache, SwiGLU, TransformerBlock, rms_norm
from unified.ops.signed_scan import signed_decay, signed_scan
from unified.ops.ssd_scan import causal_conv_silu, conv_backend, scan_backend, ssd_scan

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4  # initial softplus(dt_bias) is log-uniform in [DT_MIN, DT_MAX]
A_MIN, A_MAX = 1.0, 16.0  # initial -A is uniform in [A_MIN, A_MAX]


@dataclass
class SSMOptions:
    """d_state: N, state size per head channel; headdim: P, channels per SSM head
    (heads = expand * d_model / headdim); expand: inner width factor; d_conv: causal conv width;
    chunk_size: scan chunk length (speed only, results are the same; changeable at eval time);
    mlp: add a SwiGLU MLP after each SSM mixer; decay_range: "unit" (Mamba's exp(dt A) in (0, 1])
    or "signed" (2 exp(dt A) - 1 in (-1, 1], Grazzi et al. 2025; always the torch scan of
    `unified.ops.signed_scan`, the fused kernels cannot run it)."""

    d_state: int = 64
    headdim: int = 64
    expand: int = 2
    d_conv: int = 4
    chunk_size: int = 64
    mlp: bool = True
    decay_range: str = "unit"


@dataclass
class SSMMemOptions(SSMOptions):
    """As `ssm`, plus attn_period: layer i is a causal attention block when (i + 1) % attn_period
    == 0 (2 = alternate SSM / attention); n_mem_tokens: learned memory tokens placed before the
    sequence (0 = none)."""

    attn_period: int = 2
    n_mem_tokens: int = 8


class SSMCache:
    """Decoding state of an SSM stack: per SSM layer the last (d_conv - 1) conv inputs (b, C, k-1)
    and the SSM state (b, H, P, N); a `TransformerCache` for the attention layers (ssm_mem); `pos` counts
    the positions consumed, memory tokens included."""

    def __init__(self, conv: list[torch.Tensor], ssm: list[torch.Tensor], kv: TransformerCache | None = None):
        self.conv, self.ssm, self.kv, self.pos = conv, ssm, kv, 0

    def floats_per_sequence(self) -> int:
        """Cached floats per sequence (constant for SSM layers, growing for attention layers)."""
        n = sum(c[0].numel() for c in self.conv) + sum(s[0].numel() for s in self.ssm)
        return n + (self.kv.floats_per_sequence() if self.kv is not None else 0)


class Mamba2Mixer(nn.Module):
    """The Mamba-2 (SSD) token mixer: input projection, causal depthwise conv + SiLU, SSD scan with
    a scalar decay per head, D skip, gated RMSNorm, output projection."""

    def __init__(self, d_model: int, opts: SSMOptions, norm_eps: float = 1e-5):
        super().__init__()
        self.opts = opts  # shared with the model, so eval-time overrides (chunk_size) apply
        self.d_inner = opts.expand * d_model
        self.n_heads = self.d_inner // opts.headdim
        self.conv_dim = self.d_inner + 2 * opts.d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.n_heads, bias=False)
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, opts.d_conv, groups=self.conv_dim, bias=True)
        self.A_log = nn.Parameter(torch.zeros(self.n_heads))
        self.dt_bias = nn.Parameter(torch.zeros(self.n_heads))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm = rms_norm(self.d_inner, norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.out_proj.residual_scaled = True

    def reset_ssm_parameters(self) -> None:
        """Mamba-2 initialisation: -A ~ U[1, 16]; softplus(dt_bias) log-uniform in [1e-3, 1e-1];
        D = 1; the conv keeps PyTorch's default init. Skipped on the meta device."""
        if self.A_log.is_meta:
            return
        self.conv.reset_parameters()
        with torch.no_grad():
            self.A_log.copy_(torch.empty(self.n_heads).uniform_(A_MIN, A_MAX).log())
            dt = torch.exp(torch.rand(self.n_heads) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
            dt = dt.clamp(min=DT_FLOOR)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
            self.D.fill_(1.0)

    def forward(self, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """u: (b, T, d_model); state: (conv inputs (b, C, k-1), SSM state (b, H, P, N)) of the
        positions before u, or None at the start. Returns the output and the state after u."""
        b, T, _ = u.shape
        N, P = self.opts.d_state, self.opts.headdim
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        xbc, conv_state = causal_conv_silu(xbc, self.conv.weight, self.conv.bias, None if state is None else state[0])
        x, B, C = xbc.split([self.d_inner, N, N], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float())
        x = x.reshape(b, T, self.n_heads, P)
        if self.opts.decay_range == "signed":
            y, ssm_state = signed_scan(x, dt, signed_decay(dt, A), B, C, self.opts.chunk_size,
                                       None if state is None else state[1])
        else:
            y, ssm_state = ssd_scan(x, dt, A, B, C, self.opts.chunk_size, None if state is None else state[1])
        y = y + x * self.D[:, None].to(x.dtype)
        y = self.norm(y.reshape(b, T, self.d_inner) * F.silu(z))
        return self.out_proj(y), (conv_state, ssm_state)


class SSMBlock(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + mlp(norm(x)) when `opts.mlp`."""

    def __init__(self, d_model: int, d_ff: int, opts: SSMOptions, norm_eps: float, dropout: float):
        super().__init__()
        self.norm1 = rms_norm(d_model, norm_eps)
        self.mixer = Mamba2Mixer(d_model, opts, norm_eps)
        self.norm2 = rms_norm(d_model, norm_eps) if opts.mlp else None
        self.ffn = SwiGLU(d_model, d_ff, dropout) if opts.mlp else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: SSMCache | None = None, slot: int = 0) -> torch.Tensor:
        state = None if cache is None else (cache.conv[slot], cache.ssm[slot])
        h, new_state = self.mixer(self.norm1(x), state)
        if cache is not None:
            cache.conv[slot], cache.ssm[slot] = new_state
        x = x + self.drop(h)
        return x if self.ffn is None else x + self.ffn(self.norm2(x))


def kernel_backends(model_or_device: nn.Module | torch.device | str) -> dict[str, str]:
    """Which implementations run a model's SSM scan and causal conv (or, for a device, would run
    them): {"ssm_scan": "mamba_ssm" | "torch-chunked", "conv1d": "causal_conv1d" | "torch"}, both
    "none" for a model without Mamba-2 layers. Written to every results file and summary.json,
    so a number can be traced to the kernels that produced it."""
    if not isinstance(model_or_device, nn.Module):
        return {"ssm_scan": scan_backend(model_or_device), "conv1d": conv_backend(model_or_device)}
    mixers = [m for m in model_or_device.modules() if isinstance(m, Mamba2Mixer)]
    if not mixers:
        return {"ssm_scan": "none", "conv1d": "none"}
    device = mixers[0].A_log.device
    convs = sorted({conv_backend(device, m.conv_dim, m.opts.d_conv) for m in mixers})
    signed = mixers[0].opts.decay_range == "signed"  # never the fused kernels (unified/ops/signed_scan.py)
    return {"ssm_scan": "torch-signed-chunked" if signed else scan_backend(device), "conv1d": "+".join(convs)}


@register_variant("ssm")
class SSMLM(LanguageModel):
    """A stack of Mamba-2 blocks (no attention, no loop): linear-time training, constant-size
    decoding state."""

    Options = SSMOptions
    eval_overridable = ("chunk_size",)

    def __init__(self, cfg, opts: SSMOptions):
        for name in ("d_state", "headdim", "expand", "d_conv", "chunk_size"):
            require(getattr(opts, name) >= 1, f"{name} must be >= 1, got {getattr(opts, name)}")
        require(opts.decay_range in ("unit", "signed"),
                f"decay_range must be 'unit' or 'signed', got {opts.decay_range!r}")
        require(opts.expand * cfg.d_model % opts.headdim == 0,
                f"headdim {opts.headdim} must divide expand * d_model = {opts.expand * cfg.d_model}")
        super().__init__(cfg, opts)
        self.drop = nn.Dropout(cfg.dropout)
        self.kinds = self.layer_kinds()
        self.layers = nn.ModuleList(
            TransformerBlock(cfg) if kind == "attn" else SSMBlock(cfg.d_model, cfg.d_ff, opts, cfg.norm_eps, cfg.dropout)
            for kind in self.kinds)
        # cache slot of each layer: its index among the layers of its own kind
        self.slots = [self.kinds[:i].count(kind) for i, kind in enumerate(self.kinds)]
        n_mem = getattr(opts, "n_mem_tokens", 0)
        self.mem = nn.Parameter(torch.zeros(n_mem, cfg.d_model)) if n_mem else None

    def layer_kinds(self) -> list[str]:
        """"ssm" or "attn" for each layer, bottom to top."""
        return ["ssm"] * self.cfg.n_layers

    def n_mem(self) -> int:
        """Number of memory tokens placed before the sequence."""
        return 0 if self.mem is None else self.mem.shape[0]

    def special_init(self) -> None:
        for layer in self.layers:
            if isinstance(layer, SSMBlock):
                layer.mixer.reset_ssm_parameters()
        if self.mem is not None and not self.mem.is_meta:
            nn.init.normal_(self.mem, mean=0.0, std=0.02)

    def body(self, input_ids: torch.Tensor, cache: SSMCache | None = None) -> BodyOutput:
        x = self.tok_emb(input_ids)
        prefix = self.n_mem() if cache is None or cache.pos == 0 else 0  # memory goes first, once
        if prefix:
            x = torch.cat([self.mem.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = self.drop(x)
        for layer, kind, slot in zip(self.layers, self.kinds, self.slots):
            if kind == "attn":
                x = layer(x, None if cache is None else cache.kv, slot)
            else:
                x = layer(x, cache, slot)
        if cache is not None:
            cache.pos += x.shape[1]
        return BodyOutput(hidden=x[:, prefix:], cache=cache)

    def init_cache(self, batch_size: int) -> SSMCache:
        p = self.tok_emb.weight
        conv, ssm = [], []
        for layer in self.layers:
            if isinstance(layer, SSMBlock):
                m = layer.mixer
                conv.append(p.new_zeros(batch_size, m.conv_dim, self.opts.d_conv - 1))
                ssm.append(torch.zeros(batch_size, m.n_heads, self.opts.headdim, self.opts.d_state,
                                       device=p.device, dtype=torch.float32))
        n_attn = self.attention_layers()
        kv = (TransformerCache(n_attn, batch_size, self.cfg.n_kv_heads, self.cfg.head_dim, p.device, p.dtype)
              if n_attn else None)
        return SSMCache(conv, ssm, kv)

    # ---- accounting ------------------------------------------------------------------------
    def attention_layers(self) -> int:
        return self.kinds.count("attn")

    def matmul_params(self) -> int:
        """As the base class, minus the memory tokens and the per-head scalars (A_log, dt_bias, D),
        which are not matrix weights."""
        n = super().matmul_params() - (0 if self.mem is None else self.mem.numel())
        return n - sum(3 * layer.mixer.n_heads for layer in self.layers if isinstance(layer, SSMBlock))

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (fwd + bwd) for sequences of T = seq_len tokens after M memory
        tokens, chunk length L = min(chunk_size, T + M), E = expand * d_model, N = d_state:
            per position: 6 N_body + sum_ssm_layers 6 (L (N + E) + 2 E N) + 12 n_attn d (T + M)
            per token:    per position * (T + M) / T + 6 N_head
        N_body = matmul_params() without the LM head (N_head = vocab * d). The SSD term counts the
        intra-chunk C.B scores (L N) and mask-weighted sum (L E) and the chunk-state and inter-chunk
        products (E N each), 2 FLOPs per multiply-add, x3 for the backward pass. With M = 0 this is
        6 N + SSD (+ the nanoGPT attention term)."""
        T, M = seq_len, self.n_mem()
        N_head = self.lm_head.weight.numel()
        L = min(self.opts.chunk_size, T + M)
        ssd = sum(6 * (L * (self.opts.d_state + layer.mixer.d_inner) + 2 * layer.mixer.d_inner * self.opts.d_state)
                  for layer in self.layers if isinstance(layer, SSMBlock))
        per_position = 6 * (self.matmul_params() - N_head) + ssd + 12 * self.attention_layers() * self.cfg.d_model * (T + M)
        return per_position * (T + M) / T + 6 * N_head

    def state_size(self, seq_len: int = 1024) -> int:
        """Floats per sequence: per SSM layer (d_conv - 1) conv_dim + H P N, plus keys and values of
        the attention layers over M + seq_len positions."""
        ssm = sum((self.opts.d_conv - 1) * layer.mixer.conv_dim + layer.mixer.n_heads * self.opts.headdim * self.opts.d_state
                  for layer in self.layers if isinstance(layer, SSMBlock))
        kv = 2 * self.attention_layers() * self.cfg.n_kv_heads * self.cfg.head_dim * (seq_len + self.n_mem())
        return ssm + kv


@register_variant("ssm_mem")
class SSMMemLM(SSMLM):
    """Mamba-2 blocks with a causal attention block (the baseline's TransformerBlock) every
    `attn_period` layers and `n_mem_tokens` learned memory tokens prepended to the sequence.

    Layout (n_layers = 4, attn_period = 2, M memory tokens):
        positions  [m_0 .. m_{M-1}] [t_0 .. t_{T-1}]        memory first, then the tokens
        layers     ssm, attn, ssm, attn                     attention where (i+1) % period == 0
    The memory tokens go through every layer like ordinary positions, so every token reads them
    through attention (and through the SSM state they leave behind); they depend on no input, so
    causality holds. With a cache they are processed on the first call and their keys/values stay
    in the KV cache; their logits are never produced."""

    Options = SSMMemOptions

    def __init__(self, cfg, opts: SSMMemOptions):
        require(opts.attn_period >= 1, f"attn_period must be >= 1, got {opts.attn_period}")
        require(opts.attn_period <= cfg.n_layers,
                f"attn_period {opts.attn_period} > n_layers {cfg.n_layers} leaves no attention layer; "
                f"use attn_period between 1 and {cfg.n_layers}")
        require(opts.n_mem_tokens >= 0, f"n_mem_tokens must be >= 0, got {opts.n_mem_tokens}")
        super().__init__(cfg, opts)

    def layer_kinds(self) -> list[str]:
        p = self.opts.attn_period
        return ["attn" if (i + 1) % p == 0 else "ssm" for i in range(self.cfg.n_layers)]
