"""Transformer variants: `baseline` (a standard pre-norm decoder) and `shared_loop` (a few unique
layers applied repeatedly, parameter-shared depth).

shared_loop applies `n_unique` distinct blocks `n_loops` times (effective depth
n_unique x n_loops). `n_loops` can be changed after training (`eval_hub.py --set
n_loops=8`) to test whether extra iterations add useful compute, as recurrent-depth models do
(Dehghani et al. 2019, Universal Transformers; Geiping et al. 2025). Each application has its
own KV cache slot, so FLOPs and state grow with effective depth and are reported that way.

`pos_encoding` (both variants): "rope" (rotary, the default), "learned" (absolute position
embeddings added to the token embeddings, GPT-2 style; the reference ladder's `nano_baseline`
control) or "nope" (no position information: the causal mask alone; Kazemnejad et al. 2023,
"The Impact of Positional Encoding on Length Generalization in Transformers", NeurIPS, find it
generalises to longer inputs better than absolute or rotary encodings). Learned embeddings exist
for positions 0 .. max_seq_len - 1 only; later positions reuse the last one, which was never
trained at those distances: that is the length-generalisation failure the control measures.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from unified.errors import ConfigError
from unified.models.base import BodyOutput, LanguageModel, register_variant
from unified.models.layers import TransformerCache, TransformerBlock

POS_ENCODINGS = ("rope", "learned", "nope")


@dataclass
class TransformerOptions:
    """pos_encoding: "rope" (rotary), "learned" (absolute embeddings) or "nope" (none)."""

    pos_encoding: str = "rope"


@register_variant("baseline")
class TransformerLM(LanguageModel):
    """Decoder-only transformer: pre-norm RMSNorm, RoPE (or learned / no positions), SDPA
    attention (GQA optional), SwiGLU."""

    Options = TransformerOptions

    def __init__(self, cfg, opts):
        super().__init__(cfg, opts)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.setup_positions()

    def setup_positions(self) -> None:
        """Check `pos_encoding`; add the learned table or switch rotary off in every block."""
        if self.opts.pos_encoding not in POS_ENCODINGS:
            raise ConfigError(f"pos_encoding must be one of {', '.join(POS_ENCODINGS)}, got {self.opts.pos_encoding!r}")
        learned = self.opts.pos_encoding == "learned"
        self.pos_emb = nn.Embedding(self.cfg.max_seq_len, self.cfg.d_model) if learned else None
        for block in self.blocks:
            block.attn.use_rope = self.opts.pos_encoding == "rope"

    def embed(self, input_ids: torch.Tensor, cache: TransformerCache | None) -> torch.Tensor:
        """Token embeddings, plus the learned position embeddings of the absolute positions
        (after the cached ones; positions past max_seq_len use the last row)."""
        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            start = 0 if cache is None else cache.pos
            pos = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
            x = x + self.pos_emb(pos.clamp(max=self.cfg.max_seq_len - 1))[None].to(x.dtype)
        return x

    def schedule(self) -> list[nn.Module]:
        """The blocks in the order they are applied (one KV-cache slot per application)."""
        return list(self.blocks)

    def body(self, input_ids: torch.Tensor, cache: TransformerCache | None = None) -> BodyOutput:
        x = self.drop(self.embed(input_ids, cache))
        for i, block in enumerate(self.schedule()):
            x = block(x, cache, i)
        return BodyOutput(hidden=x, cache=cache)

    def init_cache(self, batch_size: int) -> TransformerCache:
        p = self.tok_emb.weight
        return TransformerCache(len(self.schedule()), batch_size, self.cfg.n_kv_heads, self.cfg.head_dim, p.device,
                                p.dtype)

    def attention_layers(self) -> int:
        return len(self.schedule())

    def matmul_params(self) -> int:
        """As the base class, without the learned position table (a lookup, not a matmul)."""
        return super().matmul_params() - (0 if self.pos_emb is None else self.pos_emb.weight.numel())

    def state_size(self, seq_len: int = 1024) -> int:
        return 2 * self.attention_layers() * self.cfg.n_kv_heads * self.cfg.head_dim * seq_len


@dataclass
class SharedLoopOptions(TransformerOptions):
    """pos_encoding as for `baseline`; n_unique: distinct blocks (default: half the scale's layers, at least 1);
    n_loops: times the stack of unique blocks is applied (default: so that effective depth
    equals the baseline's, i.e. equal FLOPs with fewer parameters)."""

    n_unique: int = 0  # 0 = n_layers // 2 (at least 1)
    n_loops: int = 0  # 0 = ceil(n_layers / n_unique)


@register_variant("shared_loop")
class SharedLoopLM(TransformerLM):
    """`n_unique` blocks looped `n_loops` times; loop count changeable at evaluation time."""

    Options = SharedLoopOptions
    eval_overridable = ("n_loops",)

    def __init__(self, cfg, opts: SharedLoopOptions):
        if opts.n_unique < 0 or opts.n_loops < 0:
            raise ConfigError("n_unique and n_loops must be >= 1 (0 = scale default)")
        opts.n_unique = opts.n_unique or max(1, cfg.n_layers // 2)
        opts.n_loops = opts.n_loops or -(-cfg.n_layers // opts.n_unique)
        LanguageModel.__init__(self, cfg, opts)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(opts.n_unique))
        self.setup_positions()

    def schedule(self) -> list[nn.Module]:
        return list(self.blocks) * self.opts.n_loops

    def matmul_params(self) -> int:
        per_block = sum(p.numel() for p in self.blocks.parameters())
        return super().matmul_params() + per_block * (self.opts.n_loops - 1)
