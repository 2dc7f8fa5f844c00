"""Held-out language loss measured during training (`val_lang_loss` in metrics.jsonl).

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
from typing import Any, Callable

import numpy as np
import torch

from unified.data.scoring import ratio_stderr
from unified.models import LanguageModel


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
