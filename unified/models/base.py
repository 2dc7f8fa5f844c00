"""The model factory: `create_model(variant, size, **overrides)`, the variant registry, and the
base class every variant derives from.

Every variant is the same kind of object (docs/design.md#contract-1):
    out = model(input_ids, targets=None, cache=None)  -> LMOutput(logits, loss, aux, cache,
                                                              ce_loss, token_ce, aux_loss)
    cache = model.init_cache(batch_size)              # incremental decoding for every variant
    model.num_params(), model.flops_per_token(seq_len), model.state_size(seq_len)
A variant file defines a `LanguageModel` subclass and registers it with `@register_variant`;
`unified/models/__init__.py` imports every variant file by name (the explicit list of families),
so importing anything from `unified.models` fills the registry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from unified.errors import ConfigError, UnknownNameError
from unified.models.config import SCALES, ModelConfig, scale_config
from unified.models.layers import init_weights, rms_norm


@dataclass
class LMOutput:
    """What every forward pass returns. With targets: `ce_loss` is the next-token cross-entropy
    per supervised token (targets != -100; NaN when there are none), `token_ce` the (B, T)
    float32 cross-entropy of each position (0 where unsupervised, so sums over rows or ranks
    need no second pass over the logits), `aux_loss` the variant's auxiliary loss (e.g. ACT's
    ponder cost; None for variants without one) and `loss = ce_loss + aux_loss`, the training
    objective. Metrics that claim to be a language-model loss (validation loss, bits per byte)
    must read `ce_loss`/`token_ce`, never `loss`. `aux` holds named scalar tensors for logging
    (ponder cost, mean halting steps ...; a detached copy of `aux_loss` as "aux_loss")."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: Any = None
    ce_loss: torch.Tensor | None = None
    token_ce: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


IGNORE_INDEX = -100  # unsupervised targets (prompt, padding): PyTorch's default


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of every position, (B, T) in float32, 0 where the target is
    IGNORE_INDEX. Summed and divided by the supervised count it is the mean `ce_loss`."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return ce.view(targets.shape)


@dataclass
class BodyOutput:
    """What a variant's `body` returns: final hidden states, logging scalars, an auxiliary loss
    that is added to the cross-entropy (or None), and the updated cache (or None)."""

    hidden: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_loss: torch.Tensor | None = None
    cache: Any = None


@dataclass
class NoOptions:
    """Options of a variant that has none beyond `ModelConfig`."""


class LanguageModel(nn.Module):
    """Token embedding -> variant body -> final norm -> (tied) LM head.

    Subclasses set `Options` (a dataclass of their own settings), implement `body` and
    `init_cache`, and override `flops_per_token` / `state_size` where the defaults are wrong.
    `eval_overridable` names options that may be changed after training (e.g. loop count).
    `parallel_in_time` says whether a forward over T positions runs in parallel over time (its
    cost follows the B x T tokens); False where it loops over positions or chunks, so one row
    costs about what a batch of rows costs and evaluation keeps batches whole (decoding's prefix
    sharing, perplexity batches).
    """

    Options: type = NoOptions
    eval_overridable: tuple[str, ...] = ()
    parallel_in_time: bool = True

    def __init__(self, cfg: ModelConfig, opts: Any):
        super().__init__()
        self.cfg, self.opts = cfg, opts
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.norm_f = rms_norm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    # ---- what variants implement -------------------------------------------------------
    def body(self, input_ids: torch.Tensor, cache: Any = None) -> BodyOutput:
        raise NotImplementedError

    def init_cache(self, batch_size: int) -> Any:
        raise NotImplementedError

    def special_init(self) -> None:
        """Initialise parameters that need more than the GPT-2 default (decays, gates ...)."""

    # ---- shared behaviour ----------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, cache: Any = None) -> LMOutput:
        if input_ids.dim() != 2:
            raise ConfigError(f"input_ids must be (batch, time), got shape {tuple(input_ids.shape)}")
        out = self.body(input_ids, cache)
        logits = self.lm_head(self.norm_f(out.hidden))
        aux = dict(out.aux)
        if out.aux_loss is not None:
            aux["aux_loss"] = out.aux_loss.detach()
        result = LMOutput(logits=logits, aux=aux, cache=out.cache, aux_loss=out.aux_loss)
        if targets is not None:
            result.token_ce = token_cross_entropy(logits, targets)
            result.ce_loss = result.token_ce.sum() / (targets != IGNORE_INDEX).sum()
            result.loss = result.ce_loss if out.aux_loss is None else result.ce_loss + out.aux_loss
        return result

    def reset_parameters(self) -> None:
        """GPT-2 style init of every trainable weight, then the variant's special init."""
        init_weights(self, self.cfg.n_layers)
        self.special_init()

    def decayed_parameter_names(self) -> list[str]:
        """Names of the parameters that get weight decay: the weight matrices of `nn.Linear` and
        `nn.Embedding` layers (the tied LM head once), trainable only. Everything else is not
        decayed: norm gains, biases, gates, memory tokens and initial memories (`ssm_mem.mem`,
        `rsm.mem_init`), SSM per-head scalars (A_log, dt_bias, D), conv kernels, hrnn's
        per-gate LayerNorm gains and biases. Decay pulls a matrix towards small norm (a
        regulariser); pulling a gain, a bias or a learned initial state towards 0 only changes
        what the layer computes."""
        matrices = {id(m.weight) for m in self.modules()
                    if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.dim() >= 2}
        return [n for n, p in self.named_parameters() if p.requires_grad and id(p) in matrices]

    def optimizer_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: `decayed_parameter_names()` with `weight_decay`, every other
        trainable parameter with 0. Frozen parameters (reservoirs) are left out."""
        decayed = set(self.decayed_parameter_names())
        groups: dict[bool, list[nn.Parameter]] = {True: [], False: []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups[name in decayed].append(p)
        return [{"params": groups[True], "weight_decay": weight_decay},
                {"params": groups[False], "weight_decay": 0.0}]

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95),
                            fused: bool | None = None) -> torch.optim.AdamW:
        """The one optimizer of this project (training and benchmarks): AdamW over
        `optimizer_param_groups(weight_decay)`. `fused` selects the fused kernel; None (default):
        fused where the parameters live on a CPU or CUDA device (on CPU 3-4x faster than the
        per-parameter loop for small models, issue 20), the per-parameter loop elsewhere."""
        if fused is None:
            fused = next(self.parameters()).device.type in ("cpu", "cuda")
        return torch.optim.AdamW(self.optimizer_param_groups(weight_decay), lr=lr, betas=betas, fused=fused)

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count, tied weights once. Frozen weights (parameters with requires_grad
        False, e.g. a reservoir) count unless `trainable_only`: they are still model size."""
        unique = {id(p): p for p in self.parameters()}.values()
        return sum(p.numel() for p in unique if p.requires_grad or not trainable_only)

    def num_frozen_params(self) -> int:
        """Frozen (non-trainable) weights."""
        return self.num_params() - self.num_params(trainable_only=True)

    def matmul_params(self) -> int:
        """Weights used in matrix products per token: every parameter except the input
        embedding lookup (counted once via the LM head when tied). Norm gains are included;
        they are a negligible share."""
        n = self.num_params() - self.tok_emb.weight.numel()
        if self.cfg.tie_embeddings:
            n += self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), nanoGPT/PaLM convention:
        6 N_trainable + 4 N_frozen + 12 n_attn_layers d T, where N are `matmul_params()` and T
        the sequence length. Frozen weights need no weight gradient, hence 4 instead of 6."""
        frozen = self.num_frozen_params()
        return (6 * (self.matmul_params() - frozen) + 4 * frozen
                + 12 * self.attention_layers() * self.cfg.d_model * seq_len)

    def attention_layers(self) -> int:
        """Attention layers applied per token (for the attention FLOPs term)."""
        return 0

    def state_size(self, seq_len: int = 1024) -> int:
        """Floats of decoding state kept per sequence after `seq_len` tokens (KV caches grow
        with length; recurrent states do not)."""
        return 0

    def apply_overrides(self, **overrides: Any) -> None:
        """Change options that may differ from training (e.g. loop count K) before evaluation."""
        for name, value in overrides.items():
            if name not in self.eval_overridable:
                accepted = ", ".join(self.eval_overridable) or "none"
                raise ConfigError(f"option {name!r} cannot be changed after training for variant "
                                  f"{self.cfg.variant!r}; changeable: {accepted}")
            kind = type(getattr(self.opts, name))
            setattr(self.opts, name, kind(value))

    def describe(self) -> dict[str, Any]:
        """Plain-dict description stored in checkpoints and results files."""
        return {"variant": self.cfg.variant, "size": self.cfg.size, "config": self.cfg.to_dict(),
                "options": dataclasses.asdict(self.opts),
                "params": self.num_params(), "trainable_params": self.num_params(trainable_only=True),
                "frozen_params": self.num_frozen_params()}


@dataclass
class VariantSpec:
    """A registered variant: its name and class."""

    name: str
    cls: type[LanguageModel]


VARIANTS: dict[str, VariantSpec] = {}


def register_variant(name: str) -> Callable[[type], type]:
    """Class decorator: make a `LanguageModel` subclass buildable as `create_model(name, ...)`.
    Registered variants are put under the property tests automatically."""

    def wrap(cls: type) -> type:
        VARIANTS[name] = VariantSpec(name, cls)
        return cls

    return wrap


def variant_names() -> list[str]:
    """Registered variant names in ladder order: the order of registration (the family imports
    of `unified.models`, each family registering its variants in ladder order)."""
    return list(VARIANTS)


def resolve_variant(name: str) -> str:
    """`name` itself when it is a registered variant; unknown names are an error."""
    if name not in VARIANTS:
        raise UnknownNameError("variant", name, variant_names())
    return name


def split_overrides(variant: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword overrides into ModelConfig fields and the variant's Options fields."""
    opts_cls = VARIANTS[variant].cls.Options
    opt_names = {f.name for f in dataclasses.fields(opts_cls)}
    cfg_kw = {k: v for k, v in overrides.items() if k in ModelConfig.field_names()}
    opt_kw = {k: v for k, v in overrides.items() if k in opt_names}
    unknown = set(overrides) - set(cfg_kw) - set(opt_kw) - {"variant", "size"}
    if unknown:
        raise UnknownNameError(f"option for variant {variant!r}", sorted(unknown)[0],
                               sorted(ModelConfig.field_names() | opt_names))
    return cfg_kw, opt_kw


def create_model(variant: str, size: str, device: torch.device | str | None = None, **overrides: Any) -> LanguageModel:
    """Build `variant` at the named `size`, with ModelConfig or variant-option `overrides`.

    Weights are a deterministic function of `init_seed` (default 0). `device="meta"` builds
    without allocating memory (to count parameters of large scales)."""
    variant = resolve_variant(variant)
    if size not in SCALES:
        raise UnknownNameError("model size", size, SCALES)
    cfg_kw, opt_kw = split_overrides(variant, overrides)
    cfg = scale_config(size, variant, **cfg_kw)
    spec = VARIANTS[variant]
    try:
        opts = spec.cls.Options(**opt_kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad options for variant {variant!r}: {exc}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        with torch.device(device or "cpu"):
            model = spec.cls(cfg, opts)
            model.reset_parameters()
    return model


def model_from_description(desc: dict[str, Any], device: torch.device | str | None = None) -> LanguageModel:
    """Rebuild an (untrained) model from `LanguageModel.describe()` output stored in a checkpoint."""
    cfg = dict(desc["config"])
    variant, size = cfg.pop("variant"), cfg.pop("size")
    return create_model(variant, size, device=device, **cfg, **desc.get("options", {}))


def scale_table(vocab_sizes: tuple[int, ...] = (259, 32000), variants: list[str] | None = None) -> list[dict[str, Any]]:
    """Real parameter counts of every (variant, size) built on the meta device."""
    rows = []
    for variant in variants or variant_names():
        for size in SCALES:
            row: dict[str, Any] = {"variant": variant, "size": size, **{k: v for k, v in SCALES[size].items()}}
            for v in vocab_sizes:
                m = create_model(variant, size, device="meta", vocab_size=v)
                row[f"params_v{v}"] = m.num_params()
                row[f"trainable_v{v}"] = m.num_params(trainable_only=True)
            rows.append(row)
    return rows


def scale_table_markdown(vocab_size: int) -> str:
    """Markdown table (sizes x variants) of real parameter counts at `vocab_size`; frozen
    weights shown separately. Used for docs/variants.md: `python -m unified.models`."""
    import pandas as pd

    rows = scale_table((vocab_size,))
    t, total = f"trainable_v{vocab_size}", f"params_v{vocab_size}"

    def fmt(r: dict[str, Any]) -> str:
        frozen = r[total] - r[t]
        cell = f"{r[total] / 1e6:,.2f}M"
        return cell + (f" ({frozen / 1e6:,.2f}M frozen)" if frozen else "")

    df = pd.DataFrame([{"size": r["size"], "variant": r["variant"], "params": fmt(r)} for r in rows])
    table = df.pivot(index="size", columns="variant", values="params").reindex(index=list(SCALES))
    table = table[[v for v in variant_names() if v in table.columns]]
    shapes = [f"{SCALES[s]['d_model']}/{SCALES[s]['n_layers']}/{SCALES[s]['n_heads']}" for s in table.index]
    table.insert(0, "d/layers/heads", shapes)
    return table.reset_index().to_markdown(index=False)
