"""Model configuration and the table of named scales.

`ModelConfig` holds the settings every variant shares (width, depth, heads, context ...).
Variant-specific settings live in each variant's own `Options` dataclass; both are stored in
checkpoints as plain dicts so they load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from unified.errors import ConfigError, UnknownNameError


@dataclass
class ModelConfig:
    """Settings shared by every variant. `size` names a row of `SCALES`; fields may be overridden."""

    variant: str = "baseline"
    size: str = "pico"
    vocab_size: int = 259
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (plain multi-head attention); fewer = GQA
    d_ff: int | None = None  # None = SwiGLU hidden size ~ 8/3 d_model rounded to a multiple of 64
    max_seq_len: int = 256  # the context the model is trained for (RoPE models may run longer)
    dropout: float = 0.0
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_seed: int = 0  # weights are a deterministic function of this seed

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_ff is None:
            self.d_ff = _swiglu_hidden(self.d_model)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "max_seq_len"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def _swiglu_hidden(d_model: int) -> int:
    """SwiGLU hidden width: 8/3 d_model (same parameters as a 4x GELU MLP), rounded up to 64."""
    hidden = int(8 * d_model / 3)
    return max(64, (hidden + 63) // 64 * 64) if d_model >= 64 else max(8, hidden)


# Named scales. pico / micro are CPU scales for tests and laptops; the rest follow the reference
# ladder. Parameter counts in docs/variants.md are computed from these by `python -m unified.models`.
SCALES: dict[str, dict[str, Any]] = {
    "pico": dict(d_model=64, n_layers=2, n_heads=4, max_seq_len=256),
    "micro": dict(d_model=256, n_layers=4, n_heads=4, max_seq_len=256),
    "nano": dict(d_model=512, n_layers=6, n_heads=8, max_seq_len=512),
    "50M": dict(d_model=512, n_layers=8, n_heads=8, max_seq_len=1024),
    "125M": dict(d_model=768, n_layers=12, n_heads=12, max_seq_len=1024),
    "300M": dict(d_model=1024, n_layers=24, n_heads=16, max_seq_len=2048),
    "350M": dict(d_model=1024, n_layers=24, n_heads=16, max_seq_len=2048),
    "760M": dict(d_model=1280, n_layers=36, n_heads=20, max_seq_len=2048),
    "1B": dict(d_model=2048, n_layers=18, n_heads=16, max_seq_len=4096),
    "1B-16k": dict(d_model=2048, n_layers=18, n_heads=16, n_kv_heads=4, max_seq_len=16384),
}

# 300M and 350M have the same shape in the reference ladder (its names came from different
# vocabularies); both are kept so the reference's size strings keep working.


def scale_config(size: str, variant: str = "baseline", **overrides: Any) -> ModelConfig:
    """The `ModelConfig` of a named size with `overrides` applied; unknown sizes are an error."""
    if size not in SCALES:
        raise UnknownNameError("model size", size, SCALES)
    unknown = set(overrides) - ModelConfig.field_names()
    if unknown:
        raise UnknownNameError("model option", sorted(unknown)[0], sorted(ModelConfig.field_names()))
    return ModelConfig(variant=variant, size=size, **{**SCALES[size], **overrides})
