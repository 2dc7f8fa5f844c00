"""EleutherAI lm-evaluation-harness (0.4) adapter: every variant as lm-eval model `unified`.

    python -m unified.evals.lm_eval --model_args checkpoint=RUN/best_model.pt --tasks lambada_openai

runs lm-eval's own CLI (any of its options: --tasks, --include_path, --num_fewshot, --limit,
--batch_size, --device, --log_samples ...) with this model registered; `--model unified` is
implied and `--output_path` defaults to RUN/lm_eval/results.json (lm-eval writes
RUN/lm_eval/results_<date>.json), where compare.py finds the results.
lm-eval 0.4 discovers models only through its registry, which an external package fills by
being imported (it has no plugin entry point), so the plain `lm_eval --model unified` console
script cannot see this class; `python -m unified.evals.lm_eval` (`__main__.py`) is that CLI with the
registration done. From
Python: `import unified.evals.lm_eval.adapter` and then `lm_eval.simple_evaluate(model="unified", ...)`.

model_args: checkpoint (required), prefix (eos | bos: the token every text is conditioned on;
default eos, the token training puts before every language document: after BOS, where training
only ever shows algorithmic prompts, a micro model scores 5.50 bits/byte on a short story instead
of 2.21; `eval_hub --ppl_prefix eos` gives the same numbers), max_length (default the model's max_seq_len),
max_gen_toks (256), seed (sampling seed when a task samples), threads, tokenizer, and any
evaluation-time model option (e.g. K=8, n_loops=8).

- loglikelihood: batched full forwards, right-padded: exact for every variant because padding
  sits after every scored position and each variant is causal (tests/test_properties.py).
- loglikelihood_rolling: lm-eval's own rolling windows (`get_rolling_token_windows` with one
  token of context, `make_disjoint_window`), every window of every request batched together.
- generate_until: decoding through each variant's cache (`unified.evals.sample_text.generate_until`),
  prompts of equal length batched, until a stop string, EOS or max_gen_toks.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from unified.devices import check_device
from unified.errors import ConfigError
from unified.evals.hub import load_for_eval
from unified.evals.sample_text import generate_until as generate_text_until
from unified.evals.sample_text import validate_settings
from unified.models.decoding import DecodeSettings
from unified.progress import progress
from unified.train.checkpoint import file_sha256

DEFAULT_BATCH = 16


def _batch_size(value: Any) -> int:
    """lm-eval's --batch_size (an int, or "auto" / "auto:N", which become the default here)."""
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    if isinstance(value, str) and value.startswith("auto"):
        return DEFAULT_BATCH
    raise ConfigError(f"batch_size must be an integer >= 1 or auto, got {value!r}")


def _device(name: str | None) -> str:
    """The device to run on: lm-eval's CLI passes cuda:0 by default, which falls back to the CPU
    (with a note) when this machine has no CUDA, as lm-eval's own HF model does."""
    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        print(f"note: device {name} is not available here; running on cpu", file=sys.stderr)
        return "cpu"
    return str(check_device(str(name), "device"))


@register_model("unified")
class UnifiedLM(TemplateLM):
    """A unified checkpoint (any variant) as an lm-eval language model."""

    backend = "causal"

    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int | str = DEFAULT_BATCH,
                 max_batch_size: int | None = None, prefix: str = "eos", max_length: int | None = None,
                 max_gen_toks: int = 256, seed: int = 0, threads: int | None = None, tokenizer: str | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        if prefix not in ("bos", "eos"):
            raise ConfigError(f"model_args prefix must be bos or eos, got {prefix!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.ctx = load_for_eval(checkpoint, device=_device(device), tokenizer=tokenizer, overrides=overrides)
        self.model, self.tok = self.ctx.model, self.ctx.tokenizer
        self.checkpoint, self.prefix = str(checkpoint), prefix
        self.batch_size = _batch_size(batch_size)
        self.max_length = int(max_length or self.model.cfg.max_seq_len)
        if self.max_length < 2:
            raise ConfigError(f"model_args max_length must be >= 2, got {self.max_length}")
        self.max_gen_toks, self.seed = int(max_gen_toks), int(seed)
        self._device = next(self.model.parameters()).device

    # ---- what TemplateLM asks for ----------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        """The token every scored text is conditioned on (model_args prefix)."""
        return self.tok.bos_id if self.prefix == "bos" else self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return self.tok.name

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids of `string`, after the prefix token unless add_special_tokens is False (so
        every context starts as eval_hub's texts do)."""
        ids = list(self.tok.encode(string))
        return ids if add_special_tokens is False else [self.prefix_token_id, *ids]

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(ids)

    def get_model_info(self) -> dict[str, Any]:
        """Recorded in lm-eval's results["config"]: which checkpoint, so compare.py can tell stale results."""
        desc = self.ctx.checkpoint["model"]
        return {"unified_checkpoint": self.checkpoint, "checkpoint_sha256": file_sha256(self.checkpoint),
                "variant": desc["variant"], "size": desc["size"], "train_step": self.ctx.checkpoint.get("step"),
                "tokenizer": self.tok.name, "prefix_token": self.prefix, "max_length": self.max_length}

    # ---- scoring -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, rows: list[tuple[list[int], list[int]]], desc: str, disable_tqdm: bool) -> list[tuple[float, bool]]:
        """(sum of log-probabilities in float64, greedy?) of each continuation after its context;
        the last max_length + 1 tokens are kept (lm-eval's truncation). Longest rows first, so
        rows of similar length share a right-padded batch."""
        self.model.eval()
        order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        bar = progress(total=len(rows), desc=desc, disable=disable_tqdm)
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            seqs = [(rows[i][0] + rows[i][1])[-(self.max_length + 1):] for i in idx]
            width = max(len(s) for s in seqs) - 1
            inp = torch.full((len(idx), width), self.tok.pad_id, dtype=torch.long)
            for j, s in enumerate(seqs):
                inp[j, :len(s) - 1] = torch.tensor(s[:-1])
            logits = self.model(inp.to(self._device)).logits
            for j, (i, s) in enumerate(zip(idx, seqs)):
                n = len(rows[i][1])
                if n == 0:
                    continue
                if n > len(s) - 1:
                    raise ConfigError(f"a continuation of {n} tokens does not fit max_length={self.max_length}; "
                                      f"raise model_args max_length")
                target = torch.tensor(s[-n:], device=logits.device)
                lp = F.log_softmax(logits[j, len(s) - 1 - n:len(s) - 1].float(), dim=-1)
                out[i] = (float(lp.double().gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
            bar.update(len(idx))
        bar.close()
        return out

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        results = self._score([(ctx, cont) for _, ctx, cont in requests], "loglikelihood", disable_tqdm)
        for (key, _, _), res in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text over lm-eval's rolling windows of max_length tokens."""
        rows, owner = [], []
        for r, (string,) in enumerate(req.args for req in requests):
            windows = lm_utils.get_rolling_token_windows(token_list=self.tok_encode(string, add_special_tokens=False),
                                                         prefix_token=self.prefix_token_id,
                                                         max_seq_len=self.max_length, context_len=1)
            for ctx, cont in map(lm_utils.make_disjoint_window, windows):
                rows.append((list(ctx), list(cont)))
                owner.append(r)
        totals = [0.0] * len(requests)
        for r, (lp, _) in zip(owner, self._score(rows, "loglikelihood_rolling", disable_tqdm)):
            totals[r] += lp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continue each context through the cache until a stop string (`until`), EOS or
        max_gen_toks; requests with the same generation settings are decoded together."""
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            by_kwargs[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        out: list[str] = [""] * len(requests)
        bar = progress(total=len(requests), desc="generate_until", disable=disable_tqdm)
        for key, idx in by_kwargs.items():
            kw = dict(requests[idx[0]].args[1])
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
            sample = bool(kw.pop("do_sample", False)) or float(kw.get("temperature", 0.0) or 0.0) > 0
            settings = DecodeSettings(max_new_tokens=max_new, seed=self.seed,
                                      temperature=float(kw.get("temperature") or 1.0) if sample else 0.0,
                                      top_k=int(kw.get("top_k") or 0), top_p=float(kw.get("top_p") or 1.0))
            validate_settings(settings)
            keep = max(1, self.max_length - max_new)  # lm-eval's HF model cuts contexts the same way
            prompts = [self.tok_encode(requests[i].args[0])[-keep:] for i in idx]
            texts = generate_text_until(self.model, self.tok, prompts, [until] * len(idx), settings,
                                        self.batch_size, on_done=bar.update)
            for i, text in zip(idx, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        bar.close()
        return out


def model_args_of(argv: Sequence[str]) -> dict[str, Any]:
    """The --model_args of an lm-eval command line as a dict (JSON or key=value form; {} if absent)."""
    args, value = list(argv), None
    for i, a in enumerate(args):
        if a == "--model_args" and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith("--model_args="):
            value = a.split("=", 1)[1]
    if not value:
        return {}
    try:
        parsed = json.loads(value) if value.strip().startswith("{") else lm_utils.simple_parse_args_string(value)
    except (ValueError, TypeError):
        raise ConfigError(f"--model_args {value!r} is neither key=value,... nor a JSON object") from None
    return parsed if isinstance(parsed, dict) else {}


def default_output_path(argv: Sequence[str]) -> str | None:
    """RUN/lm_eval/results.json for `--model_args checkpoint=RUN/...`, else None; lm-eval then
    writes RUN/lm_eval/results_<date>.json."""
    ckpt = model_args_of(argv).get("checkpoint")
    return str(Path(str(ckpt)).parent / "lm_eval" / "results.json") if ckpt else None
