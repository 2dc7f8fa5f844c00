"""The training loop. `train.py` only parses arguments into a `TrainConfig` (`unified.train.config`)
and calls `train`; validation and checkpoint steps are `unified.train.validation.Validating`,
saving and resuming `unified.train.resume.Checkpointing`.

Outputs (docs/design.md#contract-5) in `output_dir`: config.json, metrics.jsonl, summary.json, loss.png,
accuracy.png, best_model.pt (lowest validation loss on held-out data disjoint from the eval
grid), last.pt (for --resume). Resuming restores model, optimizer, scheduler, RNG and step; data
is a function of (seed, step), so the resumed run continues the same loss curve.

Language data (`--lang_dataset`, default auto: TinyStories when cached or reachable, else the
offline procedural story corpus) and the tokenizer (`bpe:N` is trained on its training text and
saved as tokenizer.json) come from `unified.text.corpus.load_language`. With `--use_task_curriculum`
a `TaskCurriculum` chooses the algorithmic tasks and difficulties, is updated at each validation,
saved in checkpoints and drawn in curriculum.png.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from unified.data.batches import Curriculum, CurriculumConfig
from unified.data.task_curriculum import TaskCurriculum, stratified_heldout
from unified.data.tasks import resolve_tasks
from unified.errors import TrainingError
from unified.models import create_model
from unified.models.ssm import kernel_backends
from unified.text.corpus import load_language
from unified.text.tokenizer import load_tokenizer
from unified.train.checkpoint import atomic_write_text, ensure_writable_dir, unwrap
from unified.train.config import DTYPES, TrainConfig, lr_factor
from unified.train.distributed import (World, all_reduce_sum, broadcast_object, init_from_env, rank_zero_first,
                                       shutdown, supervised_count)
from unified.train.resolve import claim_output_dir, machine_settings, resolve, step_plan
from unified.train.resume import Checkpointing, ResumeState, given_fields
from unified.train.runlock import RunLock
from unified.train.runlog import append_metrics, read_metrics
from unified.train.tracking import Tracker, open_tracker
from unified.train.validation import Validating


class Trainer(Checkpointing, Validating):
    """One training run; `run()` returns the summary dict. `given` names the options the user
    set explicitly (None: those differing from the defaults); on --resume the others take the
    stored run's values (unified.train.resume). Rank 0 holds the run folder's `lock` (RunLock)."""

    def __init__(self, cfg: TrainConfig, rank: int = 0, world_size: int = 1, given: set[str] | None = None,
                 lock: RunLock | None = None):
        given = given_fields(cfg) if given is None else given  # (compared with the defaults before filling them)
        self.requested = cfg.flatten()
        cfg = resolve(cfg, world_size)  # every name and value checked, defaults filled: no I/O yet
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.is_main = rank == 0
        # rank 0 names the run folder (a default one gets a free suffix) and every rank uses it
        self.notices: list[str] = []
        self.owns_lock = lock is None  # a lock made here is released when run() ends (see run)
        self.lock, self.last_saved_step = lock or RunLock(), None
        # one writer per run folder, checked first (a --resume into nothing fails below, creating nothing)
        out = claim_output_dir(cfg, self.lock, lambda p: ensure_writable_dir(p, "output dir")) if self.is_main else None
        self.out = Path(broadcast_object(str(out) if self.is_main else None, world_size))
        if self.is_main and self.lock.note:
            self.notices.append(self.lock.note)
        self.resume_state = ResumeState.open(cfg, self.out, given, world_size) if cfg.resume else None
        if self.resume_state is not None:  # from here on cfg is the stored run plus the allowed changes
            self.cfg = cfg = resolve(self.resume_state.config, world_size)
            self.notices += self.resume_state.notes
        machine = machine_settings(cfg)
        self.device, self.matmul_precision = machine.device, machine.matmul_precision
        self.tasks = resolve_tasks(cfg.alg_tasks)
        plan = step_plan(cfg, world_size)
        self.tokens_per_step, self.total_steps = plan.tokens_per_step, plan.total_steps
        with rank_zero_first(World(rank, world_size)):  # rank 0 fills token/tokenizer caches first
            self.tokenizer, self.corpus = self.load_language()
        self.curriculum = Curriculum(
            CurriculumConfig(seq_len=cfg.seq_len, tokens_per_step=self.tokens_per_step, alg_tokens=cfg.alg_tokens,
                             lang_alg_fraction=cfg.lang_alg_fraction),
            self.tokenizer, self.tasks, self.corpus, cfg.seed)
        self.task_curriculum: TaskCurriculum | None = None
        if cfg.use_task_curriculum:
            self.task_curriculum = TaskCurriculum(self.tasks, cfg.task_curriculum_config())
            self.curriculum.task_policy = self.task_curriculum
        overrides = {"max_seq_len": max(cfg.seq_len, 1), **cfg.model_overrides}
        self.model = create_model(cfg.variant, cfg.model_size, vocab_size=self.tokenizer.vocab_size,
                                  init_seed=cfg.seed, **overrides).to(self.device)
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay)  # fused on cpu/cuda
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio))
        self.train_model: torch.nn.Module = self.model
        if world_size > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.dtype == "fp16")
        self.val_batches = self.curriculum.validation_batches(cfg.val_rows, cfg.batch_size)
        # distinct val prompts, an equal share per train difficulty (unified.data.batches.heldout_cell)
        self.val_examples = stratified_heldout(self.tasks, cfg.eval_samples, cfg.seed)
        self.val_rows: dict[str, list[dict[str, Any]]] = {}
        self.step, self.best_val, self.best_step = 0, float("inf"), None
        self.wall_before = 0.0
        # sums of the steps since the last "train" log line (saved in checkpoints so a resumed
        # run logs the same averages), and every rank's RNG states gathered for the next save
        self.log_acc: dict[str, float] = {}
        self.log_n = 0
        self.rank_rngs: list[dict[str, torch.Tensor]] = []

    def load_language(self):
        """(tokenizer, corpus or None) for --lang_dataset / --lang_data / --tokenizer. The
        procedural corpus is sized to the run's language budget; a resumed bpe:N run reloads its
        own tokenizer.json rather than training again."""
        cfg = self.cfg
        spec = cfg.language_spec
        if spec == "none":  # (a bpe:N tokenizer without language text is refused by resolve)
            return load_tokenizer(cfg.tokenizer), None
        lang_tokens = self.total_steps * self.tokens_per_step - cfg.alg_tokens
        procedural_bytes = int(min(64e6, max(1e6, 2 * lang_tokens)))
        if self.resume_state is not None:  # the corpus the run started with, however far --max_steps extends it
            procedural_bytes = self.resume_state.stored.get("procedural_bytes", procedural_bytes)
        self.procedural_bytes = procedural_bytes
        corpus, tokenizer, notices = load_language(
            spec, cfg.tokenizer, max_tokens=cfg.lang_max_tokens, procedural_bytes=procedural_bytes,
            tokenizer_file=self.out / "tokenizer.json" if cfg.resume else None, progress=self.is_main)
        self.notices += notices
        return tokenizer, corpus

    # ---- helpers ---------------------------------------------------------------------------
    def autocast(self):
        if self.cfg.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.cfg.dtype])

    def rows_for(self, micro: int) -> range:
        start = (micro * self.world + self.rank) * self.cfg.batch_size
        return range(start, start + self.cfg.batch_size)

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to the budget and return the summary; a lock this Trainer took itself is released
        however the run ends (`train()` passes its own lock and releases it)."""
        try:
            return self._run()
        finally:
            if self.owns_lock:
                self.lock.release()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.t0 = time.time()
        self.tracker: Tracker = Tracker()  # --report_to's, opened once the run folder is set up (rank 0)
        if cfg.resume:
            self.restore()
        if self.is_main:
            resolved = {**cfg.flatten(), "matmul_precision": self.matmul_precision, "output_dir": str(self.out),
                        "total_steps": self.total_steps,
                        "tokens_per_step": self.tokens_per_step, "world_size": self.world,
                        "language_source": self.corpus.name if self.corpus else None,
                        "language": self.language_info(), "tokenizer_name": self.tokenizer.name,
                        "procedural_bytes": getattr(self, "procedural_bytes", None), "model": self.model.describe()}
            self.write_config(resolved)
            self.tracker = open_tracker(cfg.report_to, self.out, resolved, resume_step=self.step if cfg.resume else None)
            if getattr(self.tokenizer, "json", None):
                self.tokenizer.save(self.out / "tokenizer.json")
            for line in self.notices:
                print(line)
            if self.corpus is None:
                print("note: --lang_dataset none; training the algorithmic phase only")
        metrics_path = self.out / "metrics.jsonl"
        self.model.train()
        t_log = time.time()
        bar = self.bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, desc=self.out.name,
                   dynamic_ncols=True, mininterval=2.0)
        while self.step < self.total_steps:
            loss_sum, aux_sum = self.forward_backward()
            if not math.isfinite(loss_sum):  # the same on every rank (all-reduced): all stop
                bar.close()
                raise TrainingError(f"non-finite loss ({loss_sum}) at step {self.step}; training stopped before "
                                    f"the update, {self.kept_checkpoint()}")
            self.scaler.unscale_(self.optimizer)
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
            if not math.isfinite(gnorm) and not self.scaler.is_enabled():  # (fp16: the scaler skips the step)
                bar.close()  # gradients are averaged over ranks before this, so every rank stops here
                raise TrainingError(f"non-finite gradient norm ({gnorm}) at step {self.step}; training stopped "
                                    f"before the update, {self.kept_checkpoint()}")
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            for k, v in {"loss": loss_sum, "grad_norm": gnorm, **aux_sum}.items():
                self.log_acc[k] = self.log_acc.get(k, 0.0) + v
            self.log_n += 1
            if self.is_main and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                dt = time.time() - t_log
                tokens = self.step * self.tokens_per_step
                rec = {"kind": "train", "step": self.step, "tokens": tokens,
                       "phase": self.curriculum.phase(tokens), "lang_fraction": self.curriculum.lang_fraction(tokens),
                       "alg_level": (self.task_curriculum.mean_level() if self.task_curriculum
                                     else self.curriculum.level(tokens)), "lr": self.scheduler.get_last_lr()[0],
                       **{k: v / self.log_n for k, v in self.log_acc.items()},
                       "tokens_per_s": self.log_n * self.tokens_per_step / max(dt, 1e-9)}
                append_metrics(metrics_path, rec)
                self.tracker.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", phase=rec["phase"])
                self.log_acc, self.log_n, t_log = {}, 0, time.time()
            if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
                self.checkpoint_and_validate(metrics_path)
                self.sync_curriculum()
                t_log = time.time()
        bar.close()
        return self.finish()

    def forward_backward(self) -> tuple[float, dict[str, float]]:
        """Forward and backward passes of one optimizer step's micro-batches. The objective is
        the global batch's per-token cross-entropy (summed over supervised tokens, divided by
        their count over every micro-batch and rank) plus the variant's auxiliary loss averaged
        over micro-batches and ranks, so N processes with batch b train exactly like one with
        batch N*b even when ranks hold different numbers of answer tokens. DDP averages
        gradients over ranks, hence the factor `world` in the CE scale. The cross-entropy comes
        from the model's `token_ce` and the auxiliary part from its `aux_loss` (never recovered
        by subtraction). Returns the step's objective (CE + aux) and the aux means, all-reduced
        (every rank sees the same values); the aux dict also holds `ce_loss`, the step's
        cross-entropy alone. Warns once when ACT's halting has collapsed (`warn_halting_collapse`)."""
        cfg = self.cfg
        batches = [self.curriculum.batch(self.step, self.rows_for(m)) for m in range(cfg.grad_accum)]
        counts = [supervised_count(y) for _, y in batches]
        n_global = max(all_reduce_sum([sum(counts)], self.world, self.device)[0], 1.0)
        ce_total, aux_tot = 0.0, {}
        for micro, (x, y) in enumerate(batches):
            x, y = x.to(self.device), y.to(self.device)
            sync = contextlib.nullcontext()
            if self.world > 1 and micro < cfg.grad_accum - 1:
                sync = self.train_model.no_sync()
            with sync:
                with self.autocast():
                    out = self.train_model(x, targets=y)
                ce = out.token_ce.sum()
                if cfg.debug_nan_step is not None and self.step == cfg.debug_nan_step:
                    ce = ce * float("nan")  # testing aid (--debug_nan_step)
                objective = ce * (self.world / n_global)
                if out.aux_loss is not None:  # e.g. ACT's ponder cost, with its graph
                    objective = objective + out.aux_loss / cfg.grad_accum
                self.scaler.scale(objective).backward()
            ce_total += float(ce.detach())
            for k, v in out.aux.items():
                aux_tot[k] = aux_tot.get(k, 0.0) + float(v) / cfg.grad_accum
        keys = sorted(aux_tot)
        sums = all_reduce_sum([ce_total, *(aux_tot[k] for k in keys)], self.world, self.device)
        aux = {k: v / self.world for k, v in zip(keys, sums[1:])}
        aux["ce_loss"] = sums[0] / n_global
        self.warn_halting_collapse(aux)
        return aux["ce_loss"] + aux.get("aux_loss", 0.0), aux

    def warn_halting_collapse(self, aux: dict[str, float]) -> None:
        """Print one warning per run (rank 0) the first time every position of every micro-batch
        halted at min_K (`halting_collapsed` = 1 in ACT's aux): then R = 1 everywhere, nothing
        depends on the halting probabilities, and the halting unit gets no gradient from the
        loss; only a change of the thought states can move it off min_K again."""
        if aux.get("halting_collapsed", 0.0) < 1.0 or getattr(self, "_halting_collapse_warned", False):
            return
        self._halting_collapse_warned = True
        if self.is_main:
            tqdm.write(f"warning: step {self.step}: ACT halting collapsed to min_K at every position "
                       f"(R = 1, the halting unit gets no gradient; `halting_collapsed` in metrics.jsonl)")

    def language_info(self) -> dict[str, Any] | None:
        """What language data was used (for config.json)."""
        c = self.corpus
        if c is None:
            return None
        return {"source": c.name, "requested": self.cfg.language_spec, "train_tokens": int(len(c.train)),
                "val_tokens": int(len(c.val)), "bytes_per_token": c.bytes_per_token,
                "entropy_bits_per_byte": c.entropy_bits_per_byte, "entropy_nats_per_token": c.entropy_nats_per_token,
                "cache_dir": c.info.get("cache_dir")}

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
                   "tokenizer": self.tokenizer.name, "first_loss": _ce(train[0]) if train else None,
                   "final_loss": _ce(train[-1]) if train else None, "best_step": self.best_step,
                   "best_val_loss": self.best_val, "final_val": vals[-1] if vals else None,
                   "language_source": self.corpus.name if self.corpus else None,
                   "device": str(self.device), "dtype": self.cfg.dtype, "world_size": self.world,
                   "kernels": kernel_backends(m)}
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.tracker.close()
        return summary


def _ce(record: dict[str, Any]) -> float:
    """The cross-entropy of a train record (`ce_loss`; runs logged before it existed: `loss`)."""
    return record.get("ce_loss", record["loss"])


def train(cfg: TrainConfig, given: set[str] | None = None) -> dict[str, Any]:
    """Run training (single process, or one rank under torchrun) and return the summary (rank 0;
    other ranks return {}). Each rank seeds its dropout stream with seed + rank. `given`: the
    options set on the command line (see Trainer); the run folder's lock is released at the end."""
    world, device = init_from_env(cfg.device)
    cfg = cfg.replace(device=device) if device != cfg.device else cfg  # torchrun on CUDA: this rank's GPU
    torch.manual_seed(cfg.seed + world.rank)
    lock, trainer = RunLock(), None
    try:
        trainer = Trainer(cfg, world.rank, world.world_size, given=given, lock=lock)
        return trainer.run()
    finally:
        if getattr(trainer, "bar", None) is not None:
            trainer.bar.close()  # so an error line that follows starts a line of its own
        lock.release()
        shutdown()
