"""Latent thought stream (`latent`) and adaptive halting (`act`).

Both variants add a *thought stream* to a transformer backbone. At depth `inject_layer` every
position t gets a thought state z_t, initialised from its token state h_t, that a shared
"thought core" refines K times with the same weights each iteration. The result is written back
into the token stream (residual add) before the remaining blocks:

    z_t^0 = h_t;   z_t^k = core(z_t^{k-1}; h_{<=t});   h_t <- h_t + W_out norm(z_t^K)
    core(z) = z' + SwiGLU(norm(z')),  z' = z + CrossAttn(q = norm(z_t), kv = norm(h_{<=t}))

Causality: the thought of position t is strictly per position and reads the token stream only
through cross-attention to token states at positions <= t (a causal mask). Thoughts never read
other thoughts; later positions see position t's thought only through the upper token blocks,
which are causal themselves. (The reference design's shared thought tokens read the whole
sequence without a mask and were injected into every position, leaking future tokens.)

Incremental decoding: the token states h do not change while the core iterates, so their keys
and values are computed once per chunk and kept in ONE extra KV-cache slot, whatever K is. The
cache layout therefore does not depend on K, and K can be changed at evaluation time
(`eval_overridable = ("K",)`) without touching the cache or the weights.

`act` replaces the fixed K by per-position adaptive halting (Graves 2016, "Adaptive
Computation Time for Recurrent Neural Networks"): after each step k >= min_K a halting unit
gives p_t^k = sigmoid(w . norm(z_t^k) + b); position t halts at the first step N_t where the
cumulative probability reaches 1 - eps (or at K = max_K), the remainder R_t = 1 - sum_{k<N_t}
p_t^k weights the last step, and the written-back state is the mixture sum_k w_t^k z_t^k. The
ponder cost rho = mean_t (N_t + R_t) is added to the loss as lambda_ponder * rho; N_t is
piecewise constant, so the halting unit learns through R_t (Graves' trick), never detached.
`halting="pondernet"` (Banino et al. 2021, "PonderNet") uses conditional halting
probabilities lambda_t^k, p_t^k = lambda_t^k prod_{j<k} (1 - lambda_t^j), the same truncation
and mixture, and KL(p_t || Geometric(prior_lambda)) weighted by lambda_ponder.

Batched ACT runs the core for every position until all positions of the batch have halted (at
most K steps; always K in training with dropout, so that dropout masks do not depend on other
rows) and masks the contributions after each position's own halting step, so halting is
decided per position, and the full pass and cached decoding agree. Because thoughts never read
other thoughts, a halted position's later (masked) states are read by nobody. `model.last_steps`
holds the (B, T) steps used by each position in the latest forward call (for evaluation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from unified.errors import ConfigError, UnknownNameError
from unified.models.base import BodyOutput, LanguageModel, register_variant
from unified.models.config import ModelConfig
from unified.models.layers import TransformerCache, SwiGLU, TransformerBlock, apply_rope, attend, rms_norm, rope_tables

HALTING_MODES = ("act", "pondernet")


class ThoughtCore(nn.Module):
    """One shared refinement step of the per-position thought states: causal cross-attention
    from each thought (query at position t) to the token states at positions <= t, then a
    SwiGLU MLP, both pre-norm residual. Applied K times with the same weights."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.rope_base, self.dropout = cfg.rope_base, cfg.dropout
        # Applied once per chunk: keys/values of the token states (cached in one KV slot).
        self.norm_kv = rms_norm(cfg.d_model, cfg.norm_eps)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.n_kv_heads * cfg.head_dim, bias=False)
        # Applied every iteration.
        self.norm_q = rms_norm(cfg.d_model, cfg.norm_eps)
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.proj.residual_scaled = True
        self.norm_m = rms_norm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def per_iteration_modules(self) -> list[nn.Module]:
        """Modules whose weights are used once per iteration (for the FLOPs count)."""
        return [self.norm_q, self.q, self.proj, self.norm_m, self.mlp]

    def read(self, h: torch.Tensor, cache: TransformerCache | None,
             slot: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Keys/values (B, Hkv, S, D) of all token states so far and the absolute position of
        the first new one. With a cache the new positions are appended to `slot`."""
        B, T, _ = h.shape
        k, v = self.kv(self.norm_kv(h)).chunk(2, dim=-1)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        start = cache.lengths[slot] if cache is not None else 0
        cos, sin = rope_tables(torch.arange(start, start + T, device=h.device), self.head_dim, self.rope_base)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(slot, k, v)
        return k, v, start

    def forward(self, z: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
        """One refinement of thoughts z (B, T, d) at positions start.. against keys/values k, v."""
        B, T, _ = z.shape
        q = self.q(self.norm_q(z)).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope_tables(torch.arange(start, start + T, device=z.device), self.head_dim, self.rope_base)
        q = apply_rope(q, cos, sin)
        y = attend(q, k, v, q_start=start, dropout=self.dropout if self.training else 0.0)
        z = z + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, -1)))
        return z + self.mlp(self.norm_m(z))


@dataclass
class LatentOptions:
    """K: thought-core iterations (changeable at evaluation, `--set K=N`); inject_layer: number of
    token blocks before the thought stream reads and writes the token stream (-1 = n_layers // 2)."""

    K: int = 4
    inject_layer: int = -1


@register_variant("latent")
class LatentLM(LanguageModel):
    """Transformer with a per-position thought stream refined K times by a shared core."""

    Options = LatentOptions
    eval_overridable = ("K",)

    def __init__(self, cfg: ModelConfig, opts: Any):
        if opts.inject_layer == -1:
            opts.inject_layer = cfg.n_layers // 2
        if not 0 <= opts.inject_layer <= cfg.n_layers:
            raise ConfigError(f"inject_layer must be in 0..n_layers={cfg.n_layers} (-1 = middle), "
                              f"got {opts.inject_layer}")
        super().__init__(cfg, opts)
        self._check_K()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.core = ThoughtCore(cfg)
        self.out_norm = rms_norm(cfg.d_model, cfg.norm_eps)
        self.write = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.write.residual_scaled = True
        self.last_steps: torch.Tensor | None = None  # (B, T) thought steps of the latest call

    # ---- options ---------------------------------------------------------------------------
    def _check_K(self) -> None:
        """Reject a loop count the variant cannot run."""
        if self.opts.K < 1:
            raise ConfigError(f"K (thought iterations) must be >= 1, got {self.opts.K}")

    def apply_overrides(self, **overrides: Any) -> None:
        """Change K (the only eval-overridable option) before evaluation; the cache layout
        does not depend on K."""
        super().apply_overrides(**overrides)
        self._check_K()

    # ---- forward ---------------------------------------------------------------------------
    def think(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              start: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Refine z^0 = h K times. Returns (thought to write back, steps (B, T), aux, aux_loss)."""
        z = h
        for _ in range(self.opts.K):
            z = self.core(z, k, v, start)
        steps = torch.full(h.shape[:2], float(self.opts.K), device=h.device)
        return z, steps, {}, None

    def body(self, input_ids: torch.Tensor, cache: TransformerCache | None = None) -> BodyOutput:
        x = self.drop(self.tok_emb(input_ids))
        aux: dict[str, torch.Tensor] = {}
        aux_loss = None
        for i in range(self.cfg.n_layers + 1):
            if i == self.opts.inject_layer:
                k, v, start = self.core.read(x, cache, self.cfg.n_layers)
                z, steps, aux, aux_loss = self.think(x, k, v, start)
                self.last_steps = steps.detach()
                x = x + self.drop(self.write(self.out_norm(z)))
            if i < self.cfg.n_layers:
                x = self.blocks[i](x, cache, i)
        return BodyOutput(hidden=x, aux=aux, aux_loss=aux_loss, cache=cache)

    def init_cache(self, batch_size: int) -> TransformerCache:
        """One KV slot per token block plus one (the last) for the token states thoughts read."""
        p = self.tok_emb.weight
        return TransformerCache(self.cfg.n_layers + 1, batch_size, self.cfg.n_kv_heads, self.cfg.head_dim, p.device,
                                p.dtype)

    # ---- accounting ------------------------------------------------------------------------
    def core_steps(self) -> int:
        """Core applications per token in a forward pass (the FLOPs count uses this)."""
        return self.opts.K

    def per_iteration_params(self) -> int:
        """Weights used in every core iteration (query/output projections, MLP, norm gains)."""
        return sum(p.numel() for m in self.core.per_iteration_modules() for p in m.parameters())

    def matmul_params(self) -> int:
        return super().matmul_params() + (self.core_steps() - 1) * self.per_iteration_params()

    def attention_layers(self) -> int:
        return self.cfg.n_layers + self.core_steps()

    def flops_per_token(self, seq_len: int) -> float:
        """6 (N + (K - 1) N_iter) + 12 (n_layers + K) d T: every weight once per token, the
        per-iteration core weights N_iter K times in total (the token-state keys/values are
        projected once), and K cross-attentions over T token positions besides the n_layers
        self-attentions."""
        return super().flops_per_token(seq_len)

    def state_size(self, seq_len: int = 1024) -> int:
        """KV cache of the token blocks plus one slot of token-state keys/values; thought
        states are recomputed per position and carry no state across positions."""
        return 2 * (self.cfg.n_layers + 1) * self.cfg.n_kv_heads * self.cfg.head_dim * seq_len


@dataclass
class ACTOptions:
    """K: maximum thought steps (Graves' max_K; changeable at evaluation, `--set K=N`); min_K: steps
    always taken before halting may happen; lambda_ponder: weight of the ponder cost (act) or
    of the KL to the geometric prior (pondernet); halting: "act" | "pondernet"; act_eps: halt
    once the cumulative halting probability reaches 1 - act_eps; prior_lambda: per-step halting
    probability of PonderNet's geometric prior; inject_layer: as for `latent`."""

    K: int = 6
    min_K: int = 1
    lambda_ponder: float = 0.01
    halting: str = "act"
    act_eps: float = 0.01
    prior_lambda: float = 0.2
    inject_layer: int = -1


@register_variant("act")
class ACTLM(LatentLM):
    """`latent` with per-position adaptive halting of the thought core (ACT or PonderNet)."""

    Options = ACTOptions
    eval_overridable = ("K",)

    def __init__(self, cfg: ModelConfig, opts: ACTOptions):
        if opts.halting not in HALTING_MODES:
            raise UnknownNameError("halting mode", opts.halting, HALTING_MODES)
        if not 1 <= opts.min_K < opts.K:
            raise ConfigError(f"act needs 1 <= min_K < K so that halting is learned, "
                              f"got min_K={opts.min_K}, K={opts.K}")
        if opts.lambda_ponder < 0:
            raise ConfigError(f"lambda_ponder must be >= 0, got {opts.lambda_ponder}")
        if not 0.0 < opts.act_eps < 1.0:
            raise ConfigError(f"act_eps must be in (0, 1), got {opts.act_eps}")
        if not 0.0 < opts.prior_lambda < 1.0:
            raise ConfigError(f"prior_lambda must be in (0, 1), got {opts.prior_lambda}")
        super().__init__(cfg, opts)
        self.halt = nn.Linear(cfg.d_model, 1, bias=True)  # reads out_norm(z^k), like the write-back

    def _check_K(self) -> None:
        if self.opts.K < self.opts.min_K:
            raise ConfigError(f"K (maximum thought steps) must be >= min_K={self.opts.min_K}, got {self.opts.K}")

    def special_init(self) -> None:
        """Halting unit: zero weight and a bias so that training starts with every step in use.
        ACT: constant p = 1/S over the S = K - min_K + 1 halting steps, so the cumulative sum
        stays below 1 - eps until the last step, N = K everywhere and the output is the uniform
        mixture of the steps. PonderNet: lambda = prior_lambda, so the initial halting
        distribution is the prior (KL = 0). The later steps are thus trained from the start
        (a unit that halts at once never trains them) and halting earlier is learned. The zero
        weight still gets a gradient (logit gradient times out_norm(z^k))."""
        nn.init.zeros_(self.halt.weight)
        if self.opts.halting == "act":
            p0 = 1.0 / (self.opts.K - self.opts.min_K + 1)
        else:
            p0 = self.opts.prior_lambda
        nn.init.constant_(self.halt.bias, math.log(p0 / (1.0 - p0)))

    def think(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              start: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """Adaptive halting per position. Returns the halting-weighted mixture of step states,
        steps used (B, T), aux scalars and lambda_ponder * (ponder cost or KL).

        `halting_collapsed` (aux, 0/1) is 1 when every position halted at min_K: then R = 1 and
        the written-back state is z^min_K everywhere, so neither the output nor the ponder cost
        (or KL) depends on the halting probabilities and the halting unit gets no gradient.

        The loop stops once every position has halted, except in training with dropout: there
        the number of core steps run would change how many random numbers the dropout layers
        draw, so the masks of the later layers (hence every row's output) would depend on
        whether *other* rows still think. Running all K steps keeps each row's result a
        function of that row alone (the extra steps carry weight 0)."""
        o = self.opts
        early_exit = not (self.training and self.cfg.dropout > 0)
        B, T, _ = h.shape
        zero = h.new_zeros(B, T, dtype=torch.float32)
        cum, remainder, steps = zero, zero, zero  # sum of p before this step; R; N
        expected = zero  # sum_k k w_k: mean of the (truncated) halting distribution
        halted = torch.zeros(B, T, dtype=torch.bool, device=h.device)
        mix = torch.zeros_like(h)
        weights: list[torch.Tensor] = []
        z = h
        for step in range(1, o.K + 1):
            z = self.core(z, k, v, start)
            if step < o.min_K:
                continue
            if step < o.K:
                lam = torch.sigmoid(self.halt(self.out_norm(z)).squeeze(-1).float())
                p = lam if o.halting == "act" else lam * (1.0 - cum)
                stop = ~halted & (cum + p >= 1.0 - o.act_eps)
            else:  # the last step takes all the remaining probability
                p = 1.0 - cum
                stop = ~halted
            go_on = ~halted & ~stop
            w = torch.where(stop, 1.0 - cum, torch.where(go_on, p, 0.0))
            mix = mix + w.unsqueeze(-1).to(z.dtype) * z
            weights.append(w)
            expected = expected + step * w
            remainder = torch.where(stop, 1.0 - cum, remainder)
            steps = torch.where(stop, float(step), steps)
            cum = cum + torch.where(go_on, p, 0.0)
            halted = halted | stop
            if early_exit and bool(halted.all()):  # later steps would get weight 0 everywhere: skip them
                break
        ponder = (steps + remainder).mean()  # Graves' rho = N + R; the gradient flows through R
        aux = {"ponder_cost": ponder.detach(), "mean_steps": steps.mean(), "max_steps": steps.max(),
               "expected_steps": expected.detach().mean(),
               "halting_collapsed": (steps == o.min_K).all().float()}
        if o.halting == "act":
            reg = ponder
        else:
            reg = self._kl_to_prior(torch.stack(weights))
            aux["ponder_kl"] = reg.detach()
        return mix, steps, aux, o.lambda_ponder * reg

    def _kl_to_prior(self, w: torch.Tensor) -> torch.Tensor:
        """Mean over positions of KL(w_t || prior). The prior is PonderNet's geometric
        distribution with its tail lumped at the last step, like the model's forced halt:
        prior_n = lam (1 - lam)^(n-1) for n < S, prior_S = (1 - lam)^(S-1), S = K - min_K + 1.
        w: (steps run, B, T), zero after each position's halting step."""
        o = self.opts
        S = o.K - o.min_K + 1
        n = torch.arange(S, device=w.device, dtype=torch.float32)
        log_prior = math.log(o.prior_lambda) + n * math.log(1.0 - o.prior_lambda)
        log_prior[-1] = (S - 1) * math.log(1.0 - o.prior_lambda)
        log_prior = log_prior[: w.shape[0]].view(-1, 1, 1)
        kl = w * (torch.log(w.clamp_min(1e-12)) - log_prior)  # 0 log 0 = 0, finite gradient
        return kl.sum(0).mean()

    def core_steps(self) -> int:
        """The batched implementation may run all K steps (it stops early only when every
        position of the batch has halted), so FLOPs are counted at K = max_K; the steps each
        position needed are in `aux["mean_steps"]` and `last_steps`."""
        return self.opts.K

    def per_iteration_params(self) -> int:
        """Core weights per iteration plus the halting unit (applied after each step)."""
        halting = sum(p.numel() for m in (self.halt, self.out_norm) for p in m.parameters())
        return super().per_iteration_params() + halting
