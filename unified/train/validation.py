"""Validation during training: the `Validating` part of the `Trainer` (every `eval_every` steps:
validation record, task-curriculum update, best_model.pt / last.pt, plots) and the held-out
language loss (`val_lang_loss` in metrics.jsonl) it includes.

The validation split of the run's language data is cut, from its start, into windows of
`seq_len` predicted tokens (consecutive windows share one token, so every token is predicted
exactly once, in the packed-stream form training sees: document separators included, no BOS).
At most `max_tokens` predicted tokens are used, `batch_size` windows per forward pass. The loss
is the model's cross-entropy only (`LMOutput.token_ce`), never an auxiliary loss, and its
standard error is the spread over windows (`ratio_stderr`, the estimator eval_hub's perplexity
suite uses). eval_hub's perplexity suite is the lm-eval-convention number for a finished run.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from unified.data.scoring import ratio_stderr, score_examples, summarize
from unified.data.task_curriculum import competence_scores
from unified.errors import TrainingError, UnifiedError
from unified.models import LanguageModel
from unified.train.checkpoint import rng_state
from unified.train.distributed import all_gather_object, broadcast_object, supervised_count
from unified.train.plots import plot_curriculum, plot_run
from unified.train.runlog import append_metrics


@torch.no_grad()
def language_validation(model: LanguageModel, val: np.ndarray, seq_len: int, batch_size: int, max_tokens: int,
                        bytes_per_token: float, device: torch.device | str = "cpu",
                        autocast: Callable[[], Any] = contextlib.nullcontext) -> dict[str, Any]:
    """val_lang_loss (nats per token), val_lang_loss_stderr (over windows; None with one window),
    val_lang_bpb and its stderr, val_lang_tokens (predicted tokens) and val_lang_windows for the
    windows of `val` described in the module docstring; {} when `val` is shorter than one window.
    `autocast` is the training precision context (a factory, called once per batch)."""
    n_windows = min((len(val) - 1) // seq_len, max(1, max_tokens // seq_len))
    if n_windows < 1:
        return {}
    ids = torch.as_tensor(np.asarray(val[:n_windows * seq_len + 1]).astype("int64"))
    x, y = ids[:-1].view(n_windows, seq_len), ids[1:].view(n_windows, seq_len)
    sums: list[float] = []
    for i in range(0, n_windows, batch_size):
        with autocast():
            out = model(x[i:i + batch_size].to(device), targets=y[i:i + batch_size].to(device))
        sums += out.token_ce.double().sum(dim=1).cpu().tolist()
    loss, stderr = ratio_stderr([(s, seq_len) for s in sums])
    stderr = stderr if n_windows > 1 else None
    to_bpb = 1.0 / math.log(2) / bytes_per_token
    return {"val_lang_loss": loss, "val_lang_loss_stderr": stderr, "val_lang_bpb": loss * to_bpb,
            "val_lang_bpb_stderr": stderr * to_bpb if stderr is not None else None,
            "val_lang_tokens": n_windows * seq_len, "val_lang_windows": n_windows}


class Validating:
    """The validation and checkpoint steps of `unified.train.trainer.Trainer` (a mixin: it uses
    the trainer's model, data, curriculum, tracker and `Checkpointing` saves)."""

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Validation metrics. Every loss here is cross-entropy only: `val_loss` (per supervised
        token of the fixed held-out batches; selects best_model.pt) and the language metrics of
        `language_validation`; a variant's auxiliary loss (ACT's ponder cost) is logged beside
        them as `val_aux_loss` and never added. Then exact match on held-out val prompts."""
        self.model.eval()
        ce_sum, n_tok, aux_sum, n_rows = 0.0, 0, 0.0, 0  # per-token loss: independent of the batching
        has_aux = False
        for x, y in self.val_batches:
            with self.autocast():
                out = self.model(x.to(self.device), targets=y.to(self.device))
            ce_sum += float(out.token_ce.sum())
            n_tok += supervised_count(y)
            if out.aux_loss is not None:
                has_aux = True
                aux_sum += float(out.aux_loss) * len(x)
            n_rows += len(x)
        rec: dict[str, Any] = {"kind": "val", "step": self.step, "tokens": self.step * self.tokens_per_step,
                               "val_loss": ce_sum / max(n_tok, 1)}
        if has_aux:
            rec["val_aux_loss"] = aux_sum / max(n_rows, 1)
        if self.corpus is not None:  # cross-entropy on held-out text, with its stderr (unified.train.validation)
            # never more held-out tokens than the run trains between two validations (tiny runs stay cheap)
            cap = min(self.cfg.val_lang_tokens, self.cfg.eval_every * self.tokens_per_step)
            rec.update(language_validation(self.model, self.corpus.val, self.cfg.seq_len, self.cfg.batch_size,
                                           cap, self.corpus.bytes_per_token, self.device, self.autocast))
        rows_all = []
        for task in self.tasks:
            rows = score_examples(self.model, self.tokenizer, self.val_examples[task.name])
            rec[f"val_em/{task.name}"] = summarize(rows)["exact_match"]
            self.val_rows[task.name] = rows
            rows_all += rows
        rec["val_exact_match"] = summarize(rows_all)["exact_match"]
        self.model.train()
        return rec

    def checkpoint_and_validate(self, metrics_path: Path) -> None:
        """Validate and checkpoint on rank 0; non-finite weights or validation losses write
        nothing and stop the run, a failed write too, on every rank with the same one line."""
        self.rank_rngs = all_gather_object(rng_state(self.device), self.world)  # every rank takes part
        failure: BaseException | None = None
        if self.is_main:
            try:
                self.validate_and_save(metrics_path)
            except (UnifiedError, OSError) as exc:
                failure = exc
        message = broadcast_object(None if failure is None else str(failure), self.world)
        if failure is not None:
            raise failure
        if message is not None:
            raise TrainingError(message)

    def validate_and_save(self, metrics_path: Path) -> None:
        """Rank 0's part of `checkpoint_and_validate`: validation record, curriculum update,
        best_model.pt and last.pt, plots; only finite weights and losses are ever written."""
        self.check_weights_finite()
        rec = self.validate()
        for key in ("val_loss", "val_lang_loss"):
            if key in rec and not math.isfinite(rec[key]):
                raise TrainingError(f"non-finite validation loss ({key} {rec[key]}) at step {self.step}; training "
                                    f"stopped, {self.kept_checkpoint()}")
        append_metrics(metrics_path, rec)
        self.tracker.log(rec)
        if self.task_curriculum is not None:
            self.update_curriculum(metrics_path, rec)
        if rec["val_loss"] < self.best_val:
            self.best_val, self.best_step = rec["val_loss"], self.step
            self.save("best_model.pt")
        self.save("last.pt")
        self.last_saved_step = self.step
        plot_run(self.out)
        if self.task_curriculum is not None:
            plot_curriculum(self.out)

    def update_curriculum(self, metrics_path: Path, rec: dict[str, Any]) -> None:
        """Feed this validation's per-task exact match (at difficulty <= each task's level) to the
        task curriculum; log its decisions and a snapshot of its state (kind "curriculum")."""
        tc = self.task_curriculum
        head = {"kind": "curriculum", "step": self.step, "tokens": rec["tokens"], "strategy": tc.cfg.strategy}
        for decision in tc.update(self.step, competence_scores(self.val_rows, tc)):
            append_metrics(metrics_path, {**head, **decision})
            self.tracker.log({**head, **decision})
        append_metrics(metrics_path, {**head, "action": "state", **tc.snapshot()})
        self.tracker.log({**head, "action": "state", **tc.snapshot()})

    def sync_curriculum(self) -> None:
        """Under DDP, give every rank rank 0's curriculum state (only rank 0 validates)."""
        if self.task_curriculum is None or self.world == 1:
            return
        state = broadcast_object(self.task_curriculum.state_dict() if self.is_main else None, self.world)
        if not self.is_main:
            self.task_curriculum.load_state_dict(state)
