"""The training loop. `train.py` only parses arguments into a `TrainConfig` and calls `train`.

Outputs (DESIGN contract 5) in `output_dir`: config.json, metrics.jsonl, summary.json, loss.png,
accuracy.png, best_model.pt (lowest validation loss on held-out data disjoint from the eval
grid), last.pt (for --resume). Resuming restores model, optimizer, scheduler, RNG and step; data
is a function of (seed, step), so the resumed run continues the same loss curve.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unified.checkpoint import load_checkpoint, save_checkpoint, unwrap
from unified.corpus import corpus_from_path
from unified.data import Curriculum, CurriculumConfig, heldout_examples
from unified.errors import CheckpointError, ConfigError, TrainingError, require
from unified.evals.algorithmic import score_examples, summarize
from unified.model import create_model, resolve_variant
from unified.plots import plot_run
from unified.runlog import append_metrics, read_metrics
from unified.tasks import resolve_tasks
from unified.tokenizer import load_tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Every training option; stored resolved in config.json."""

    variant: str = "baseline"
    model_size: str = "micro"
    output_dir: str | None = None  # default runs/<size>_<variant> (suffixed, never overwritten)
    seed: int = 0
    tokenizer: str = "byte"
    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    lr: float | None = None  # default: 1e-3 at pico/micro, 6e-4 above
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # default: 5% of the steps, at most 500
    schedule: str = "cosine"  # cosine | wsd | constant
    total_tokens: int = 20_000_000
    alg_tokens: int | None = None  # default: all of total_tokens without language data, else half
    max_steps: int | None = None  # overrides the step count derived from total_tokens
    alg_tasks: str = "all"
    lang_data: str | None = None
    lang_alg_fraction: float = 0.15
    eval_every: int = 200
    eval_samples: int = 32  # held-out validation examples per task at each validation
    val_rows: int = 32
    log_every: int = 10
    grad_clip: float = 1.0
    dtype: str = "fp32"
    compile: bool = False
    device: str = "auto"
    resume: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)
    debug_nan_step: int | None = None  # testing aid: make the loss NaN at this step

    def validate(self) -> None:
        """Reject impossible values with one clear message each."""
        for name in ("batch_size", "seq_len", "grad_accum", "total_tokens", "eval_every", "log_every",
                     "eval_samples", "val_rows"):
            require(getattr(self, name) >= 1, f"--{name} must be >= 1, got {getattr(self, name)}")
        require(self.max_steps is None or self.max_steps >= 1, f"--max_steps must be >= 1, got {self.max_steps}")
        require(self.alg_tokens is None or self.alg_tokens >= 0, f"--alg_tokens must be >= 0, got {self.alg_tokens}")
        require(self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}")
        require(self.schedule in ("cosine", "wsd", "constant"),
                f"unknown --schedule {self.schedule!r}; accepted: cosine, wsd, constant")
        require(self.dtype in DTYPES, f"unknown --dtype {self.dtype!r}; accepted: {', '.join(DTYPES)}")


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine to min_ratio, WSD (constant, then
    linear decay over the last 20%), or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        decay_start = int(0.8 * total)
        if step < decay_start:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (step - decay_start) / max(1, total - decay_start)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def resolve_output_dir(cfg: TrainConfig) -> Path:
    """The run folder: --output_dir, or runs/<size>_<variant> with a suffix when that holds a run."""
    if cfg.output_dir:
        out = Path(cfg.output_dir)
        if not cfg.resume and (out / "config.json").exists():
            raise ConfigError(f"--output_dir {str(out)!r} already holds a run; use --resume to continue it "
                              f"or choose another --output_dir")
        return out
    base = Path("runs") / f"{cfg.model_size}_{cfg.variant}"
    if cfg.resume:
        return base
    out, k = base, 2
    while (out / "config.json").exists():
        out, k = Path(f"{base}_{k}"), k + 1
    return out


class Trainer:
    """One training run; `run()` returns the summary dict."""

    def __init__(self, cfg: TrainConfig, rank: int = 0, world_size: int = 1):
        cfg.validate()
        cfg.variant = resolve_variant(cfg.variant)
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.is_main = rank == 0
        self.device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.tasks = resolve_tasks(cfg.alg_tasks)
        self.corpus = corpus_from_path(cfg.lang_data, self.tokenizer) if cfg.lang_data else None
        self.tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world_size
        self.total_steps = cfg.max_steps or max(1, cfg.total_tokens // self.tokens_per_step)
        if cfg.alg_tokens is None:
            cfg.alg_tokens = cfg.total_tokens if self.corpus is None else cfg.total_tokens // 2
        cfg.lr = cfg.lr or (1e-3 if cfg.model_size in ("pico", "micro") else 6e-4)
        cfg.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(500, max(1, self.total_steps // 20))
        self.curriculum = Curriculum(
            CurriculumConfig(seq_len=cfg.seq_len, tokens_per_step=self.tokens_per_step, alg_tokens=cfg.alg_tokens,
                             lang_alg_fraction=cfg.lang_alg_fraction),
            self.tokenizer, self.tasks, self.corpus, cfg.seed)
        overrides = {"max_seq_len": max(cfg.seq_len, 1), **cfg.model_overrides}
        self.model = create_model(cfg.variant, cfg.model_size, vocab_size=self.tokenizer.vocab_size,
                                  init_seed=cfg.seed, **overrides).to(self.device)
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=cfg.lr, betas=(0.9, 0.95),
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))
        self.train_model: torch.nn.Module = self.model
        if world_size > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.dtype == "fp16")
        self.val_batches = self.curriculum.validation_batches(cfg.val_rows, cfg.batch_size)
        self.val_examples = heldout_examples(self.tasks, "val", cfg.eval_samples, cfg.seed)
        self.out = resolve_output_dir(cfg)
        self.step, self.best_val, self.best_step = 0, float("inf"), None
        self.wall_before = 0.0

    # ---- helpers ---------------------------------------------------------------------------
    def autocast(self):
        if self.cfg.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.cfg.dtype])

    def rows_for(self, micro: int) -> range:
        start = (micro * self.world + self.rank) * self.cfg.batch_size
        return range(start, start + self.cfg.batch_size)

    def save(self, name: str) -> None:
        save_checkpoint(self.out / name, self.model, self.tokenizer.name,
                        train_config=dataclasses.asdict(self.cfg), step=self.step,
                        optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                        rng={"torch": torch.get_rng_state()}, best_val=self.best_val, best_step=self.best_step,
                        wall_time_s=self.wall_before + time.time() - self.t0)

    def restore(self) -> None:
        path = self.out / "last.pt"
        if not path.exists():
            raise CheckpointError(f"--resume: no {str(path)} to resume from")
        ckpt = load_checkpoint(path)
        if ckpt["tokenizer"] != self.tokenizer.name:
            raise CheckpointError(f"--resume: run used tokenizer {ckpt['tokenizer']!r}, not {self.tokenizer.name!r}")
        if ckpt["model"]["variant"] != self.cfg.variant or ckpt["model"]["size"] != self.cfg.model_size:
            raise CheckpointError(f"--resume: {path} is a {ckpt['model']['size']} {ckpt['model']['variant']} run, "
                                  f"not {self.cfg.model_size} {self.cfg.variant}")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.step, self.best_val, self.best_step = ckpt["step"], ckpt["best_val"], ckpt["best_step"]
        self.wall_before = ckpt.get("wall_time_s", 0.0)
        if self.is_main:
            append_metrics(self.out / "metrics.jsonl", {"kind": "resume", "step": self.step})

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Validation loss on fixed held-out batches and exact match on held-out val prompts."""
        self.model.eval()
        losses = []
        lang_losses = []
        for x, y in self.val_batches:
            with self.autocast():
                losses.append(float(self.model(x.to(self.device), targets=y.to(self.device)).loss))
        rec: dict[str, Any] = {"kind": "val", "step": self.step, "tokens": self.step * self.tokens_per_step,
                               "val_loss": sum(losses) / len(losses)}
        if self.corpus is not None:
            n = self.cfg.seq_len + 1
            for i in range(0, min(len(self.corpus.val) - n, 8 * n), n):
                w = torch.as_tensor(self.corpus.val[i:i + n].astype("int64"))[None].to(self.device)
                with self.autocast():
                    lang_losses.append(float(self.model(w[:, :-1], targets=w[:, 1:]).loss))
            if lang_losses:
                rec["val_lang_loss"] = sum(lang_losses) / len(lang_losses)
        rows_all = []
        for task in self.tasks:
            rows = score_examples(self.model, self.tokenizer, self.val_examples[task.name])
            rec[f"val_em/{task.name}"] = summarize(rows)["exact_match"]
            rows_all += rows
        rec["val_exact_match"] = summarize(rows_all)["exact_match"]
        self.model.train()
        return rec

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.t0 = time.time()
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / ".write_test"
            try:
                probe.write_text("")
                probe.unlink()
            except OSError as exc:
                raise ConfigError(f"output dir {str(self.out)!r} is not writable ({exc.strerror})") from None
        if cfg.resume:
            self.restore()
        if self.is_main:
            resolved = {**dataclasses.asdict(cfg), "output_dir": str(self.out), "total_steps": self.total_steps,
                        "tokens_per_step": self.tokens_per_step, "world_size": self.world,
                        "language_source": self.corpus.name if self.corpus else None,
                        "model": self.model.describe()}
            (self.out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
            if self.corpus is None:
                print("note: no language data given (--lang_data); training the algorithmic phase only")
        metrics_path = self.out / "metrics.jsonl"
        self.model.train()
        acc: dict[str, float] = {}
        n_acc, t_log = 0, time.time()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, desc=self.out.name,
                   dynamic_ncols=True, mininterval=2.0)
        while self.step < self.total_steps:
            loss_sum = 0.0
            aux_sum: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                x, y = self.curriculum.batch(self.step, self.rows_for(micro))
                x, y = x.to(self.device), y.to(self.device)
                sync = contextlib.nullcontext()
                if self.world > 1 and micro < cfg.grad_accum - 1:
                    sync = self.train_model.no_sync()
                with sync, self.autocast():
                    out = self.train_model(x, targets=y)
                    loss = out.loss / cfg.grad_accum
                if cfg.debug_nan_step is not None and self.step == cfg.debug_nan_step:
                    loss = loss * float("nan")
                self.scaler.scale(loss).backward()
                loss_sum += float(loss.detach())
                for k, v in out.aux.items():
                    aux_sum[k] = aux_sum.get(k, 0.0) + float(v) / cfg.grad_accum
            if not math.isfinite(loss_sum):
                kept = "last.pt" if (self.out / "last.pt").exists() else "no checkpoint yet"
                raise TrainingError(f"non-finite loss ({loss_sum}) at step {self.step}; training stopped, "
                                    f"last good checkpoint kept ({kept} in {self.out})")
            self.scaler.unscale_(self.optimizer)
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            for k, v in {"loss": loss_sum, "grad_norm": gnorm, **aux_sum}.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if self.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                dt = time.time() - t_log
                tokens = self.step * self.tokens_per_step
                rec = {"kind": "train", "step": self.step, "tokens": tokens,
                       "phase": self.curriculum.phase(tokens), "lang_fraction": self.curriculum.lang_fraction(tokens),
                       "alg_level": self.curriculum.level(tokens), "lr": self.scheduler.get_last_lr()[0],
                       **{k: v / n_acc for k, v in acc.items()},
                       "tokens_per_s": n_acc * self.tokens_per_step / max(dt, 1e-9)}
                append_metrics(metrics_path, rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", phase=rec["phase"])
                acc, n_acc, t_log = {}, 0, time.time()
            if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
                self.checkpoint_and_validate(metrics_path)
                t_log = time.time()
        bar.close()
        return self.finish()

    def checkpoint_and_validate(self, metrics_path: Path) -> None:
        if not self.is_main:
            return
        rec = self.validate()
        append_metrics(metrics_path, rec)
        if rec["val_loss"] < self.best_val:
            self.best_val, self.best_step = rec["val_loss"], self.step
            self.save("best_model.pt")
        self.save("last.pt")
        plot_run(self.out)

    def finish(self) -> dict[str, Any]:
        if not self.is_main:
            return {}
        wall = self.wall_before + time.time() - self.t0
        records = read_metrics(self.out / "metrics.jsonl")
        train = [r for r in records if r.get("kind") == "train"]
        vals = [r for r in records if r.get("kind") == "val"]
        tokens = self.step * self.tokens_per_step
        m = unwrap(self.model)
        summary = {"output_dir": str(self.out), "variant": self.cfg.variant, "size": self.cfg.model_size, "steps": self.step, "tokens": tokens,
                   "wall_time_s": wall, "tokens_per_s": tokens / max(wall, 1e-9),
                   "params": m.num_params(), "trainable_params": m.num_params(trainable_only=True),
                   "frozen_params": m.num_frozen_params(), "flops_per_token": m.flops_per_token(self.cfg.seq_len),
                   "state_size": m.state_size(self.cfg.seq_len), "seed": self.cfg.seed,
                   "tokenizer": self.tokenizer.name, "first_loss": train[0]["loss"] if train else None,
                   "final_loss": train[-1]["loss"] if train else None, "best_step": self.best_step,
                   "best_val_loss": self.best_val, "final_val": vals[-1] if vals else None,
                   "language_source": self.corpus.name if self.corpus else None,
                   "device": str(self.device), "dtype": self.cfg.dtype, "world_size": self.world}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training (single process, or one rank under torchrun) and return the summary."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    torch.manual_seed(cfg.seed)
    try:
        return Trainer(cfg, rank, world).run()
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
