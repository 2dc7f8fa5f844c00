"""The fixed tiny checkpoints and grids of tests/test_eval_equivalence.py, and the writer of
tests/eval_reference.json: every suite's results as the straightforward (pre-speed-up, issue 20)
implementation computed them. The speed-ups of the eval suites must reproduce these exactly
(counts, predictions, exact match) and perplexity to ~1e-6 relative.

Regenerate only when a change of results is intended and explained in its commit:
    python tests/eval_reference.py    (writes tests/eval_reference.json, 1 thread)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from helpers import tiny_model  # noqa: E402
from unified.data.batches import heldout_cell  # noqa: E402
from unified.data.tasks import resolve_tasks  # noqa: E402
from unified.evals.algorithmic import AlgorithmicSettings, run_algorithmic  # noqa: E402
from unified.evals.needle import NeedleSettings, run_needle  # noqa: E402
from unified.evals.perplexity import window_nll  # noqa: E402
from unified.models import variant_names  # noqa: E402
from unified.models.decoding import DecodeSettings, generate  # noqa: E402
from unified.text.tokenizer import ByteTokenizer  # noqa: E402

REFERENCE = HERE / "eval_reference.json"
# every variant: their caches are of every kind (KV, SSM conv+state with memory tokens, reservoir
# states, hrnn's two states, rsm's memories + partial chunk; act/latent report compute steps)
VARIANTS = tuple(variant_names())
# The EOS embedding row (tied with the LM head) is scaled per variant so that greedy decoding ends on
# EOS for some rows, at various steps, and runs out of tokens for others: early stop is exercised.
# (reservoir's tiny model jumps from never to always ending on EOS near -9.7: it never ends here.)
EOS_SCALE = {"baseline": -8.0, "shared_loop": 8.0, "latent": 8.0, "act": -3.0, "ssm": 4.0, "ssm_mem": 2.0,
             "reservoir": -8.0, "liquid": 5.0, "hrnn": 16.0, "rsm": -12.0}
NEEDLE = NeedleSettings(context_lengths=(96, 128, 200), depths=(0.0, 0.25, 0.5, 0.75, 1.0), samples=3, seed=1)
ALG_TASKS = ("parity", "copy", "addition", "dyck")
ALG = AlgorithmicSettings(limit=6, seed=2, ood_grid={"parity": (13,), "addition": (5,)})
PPL_TEXT = ("Once upon a time a small fox lived in a wood. It liked to run past the old oak. " * 9
            + "The end.\n")


def reference_model(variant: str) -> torch.nn.Module:
    """The fixed tiny checkpoint of `variant` (init seed 0, byte vocabulary, EOS row scaled)."""
    model = tiny_model(variant, vocab_size=ByteTokenizer.vocab_size).eval()
    with torch.no_grad():
        model.tok_emb.weight[ByteTokenizer.eos_id] *= EOS_SCALE.get(variant, 1.0)
    return model


def alg_prompts(tok: ByteTokenizer) -> list[list[int]]:
    """Token prompts of the algorithmic grid (IID + OOD cells), as `score_examples` builds them."""
    prompts = []
    for task in resolve_tasks(list(ALG_TASKS)):
        lo, hi = task.train_range
        for diffs in [list(range(lo, hi + 1)), *[[d] for d in ALG.ood_values(task)]]:
            prompts += [[tok.bos_id] + tok.encode(e.prompt) for e in heldout_cell(task, "eval", diffs, ALG.limit,
                                                                                   ALG.seed)]
    return prompts


def ppl_stream(tok: ByteTokenizer) -> np.ndarray:
    """The perplexity token stream: three documents separated by EOS (windows of 64 tokens)."""
    ids: list[int] = []
    for d in (PPL_TEXT, PPL_TEXT[::-1], PPL_TEXT.upper()):
        ids += tok.encode(d) + [tok.eos_id]
    return np.asarray(ids, dtype=np.int64)


def strip_plot(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "plot"}


def reference_outputs(variant: str) -> dict[str, Any]:
    """Everything the reference records for one variant (the current implementation's outputs)."""
    from unified.evals.needle import NeedleBuilder, run_length

    tok = ByteTokenizer()
    model = reference_model(variant)
    builder = NeedleBuilder(tok)
    needle_rows = {str(n): run_length(model, tok, builder, n, NEEDLE) for n in NEEDLE.context_lengths}
    gen = generate(model, alg_prompts(tok), tok.eos_id, DecodeSettings(max_new_tokens=9), batch_size=5)
    return {"needle": strip_plot(run_needle(model, tok, NEEDLE)), "needle_rows": needle_rows,
            "algorithmic": run_algorithmic(model, tok, resolve_tasks(list(ALG_TASKS)), ALG),
            "generate": {"tokens": gen.tokens, "mean_steps": gen.mean_steps, "ended": gen.ended,
                         "answer_steps": gen.answer_steps},
            "perplexity_windows": window_nll(model, ppl_stream(tok), tok.bos_id, tok.eos_id, 64, batch_size=2)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    data = {"torch": torch.__version__, "variants": {v: reference_outputs(v) for v in VARIANTS}}
    REFERENCE.write_text(json.dumps(data, indent=None, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
