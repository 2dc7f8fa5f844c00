"""How predictions are scored, shared by the trainer's validation and the evaluation suites.

- Strict scoring of an algorithmic example (`strict_correct`): correct only when the generated
  tokens are exactly the answer's tokens followed by EOS, and then `Task.check` on the decoded
  text; `token_accuracy` counts position-wise matches against answer + EOS.
- `score_examples` greedy-decodes a list of examples with the model's cache (batched) and returns
  one row per example; `summarize` / `pooled` turn rows into a cell's numbers (exact match and its
  standard error, token accuracy, n and n_distinct, the chance floor of the best constant answer,
  the token-length range, mean compute steps of adaptive variants).
- The two standard errors every number carries: `mean_stderr` (mean over examples, sample std /
  sqrt(n), lm-eval's convention) and `ratio_stderr` (NLL per token over windows, ratio
  estimator; the trainer's `val_lang_loss` and eval_hub's perplexity suite use it).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Hashable, Sequence

from unified.data.batches import encode_example
from unified.data.tasks import Example, Task, get_task
from unified.models.base import LanguageModel
from unified.models.decoding import DecodeSettings, generate
from unified.text.tokenizer import Tokenizer

# Tasks whose answers are a small fixed set: a uniformly random valid answer scores 1/len(set).
# (mod_add's 97 residues are listed for completeness; its constant-answer floor is the clearer number.)
VALID_ANSWERS: dict[str, tuple[str, ...]] = {"parity": ("0", "1"), "dyck": ("0", "1"), "compare": ("<", "=", ">"),
                                             "mod_add": tuple(str(r) for r in range(97))}


# ---- strict scoring ------------------------------------------------------------------------
def strict_correct(pred: Sequence[int], ended: bool, answer: Sequence[int]) -> bool:
    """The generated tokens are exactly `answer` and generation then stopped at EOS (`ended`).
    Extra tokens (PAD, BOS, spaces), missing tokens and a missing EOS are all wrong."""
    return bool(ended) and list(pred) == list(answer)


def token_accuracy(pred: Sequence[int], ended: bool, answer: Sequence[int], eos_id: int) -> float:
    """Position-wise matches between the prediction and answer + EOS, divided by the longer of
    the two: target = answer + [EOS]; predicted = pred (+ [EOS] when generation ended on it);
    accuracy = #{i : predicted[i] == target[i]} / max(len(predicted), len(target)). Extra and
    missing tokens count as errors, so only the exact answer with its EOS scores 1."""
    target = list(answer) + [eos_id]
    got = list(pred) + ([eos_id] if ended else [])
    hits = sum(1 for p, t in zip(got, target) if p == t)
    return hits / max(len(got), len(target))


def score_examples(model: LanguageModel, tokenizer: Tokenizer, examples: Sequence[Example],
                   batch_size: int = 64, cells: Sequence[Hashable] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Greedy-decode every example; per example: prompt, answer, correct (strict, see
    `strict_correct`, then `Task.check`), token accuracy, prediction text, whether generation
    ended on EOS, compute steps (all positions and answer positions; None for fixed-compute
    variants) and token length of "BOS prompt answer EOS" (as trained, `encode_example`).

    The token budget is the longest answer + 4. `cells` (one key per example) scores several
    grid cells in one call, each with its own budget, so prompts of equal length from different
    cells share decoding batches; `on_batch(n)` is called after each batch (progress bars)."""
    if not examples:
        return []
    prompts = [[tokenizer.bos_id] + tokenizer.encode(e.prompt) for e in examples]
    answers = [tokenizer.encode(e.answer) for e in examples]
    keys = list(cells) if cells is not None else [None] * len(examples)
    longest: dict[Hashable, int] = {}
    for key, a in zip(keys, answers):
        longest[key] = max(longest.get(key, 0), len(a))
    budgets = [longest[key] + 4 for key in keys]
    gen = generate(model, prompts, tokenizer.eos_id, DecodeSettings(max_new_tokens=max(budgets)),
                   batch_size=batch_size, max_new_tokens=budgets, on_batch=on_batch)
    ended = gen.ended if gen.ended is not None else [len(t) < b for t, b in zip(gen.tokens, budgets)]
    answer_steps = gen.answer_steps if gen.answer_steps is not None else [None] * len(examples)
    rows = []
    for ex, ans, pred, eos, steps, a_steps in zip(examples, answers, gen.tokens, ended, gen.mean_steps,
                                                  answer_steps):
        text = tokenizer.decode(pred)
        correct = strict_correct(pred, eos, ans) and get_task(ex.meta["task"]).check(text, ex.answer)
        rows.append({"task": ex.meta["task"], "difficulty": ex.meta["difficulty"], "prompt": ex.prompt,
                     "answer": ex.answer, "correct": float(correct),
                     "token_accuracy": token_accuracy(pred, eos, ans, tokenizer.eos_id), "prediction": text,
                     "ended": bool(eos), "steps": steps, "answer_steps": a_steps,
                     "length": len(encode_example(tokenizer, ex)[0])})
    return rows


# ---- cell summaries --------------------------------------------------------------------------
def constant_answer_floor(answers: Sequence[str]) -> tuple[float, str | None]:
    """Exact match of the best constant answer over `answers` (the most frequent one; ties go
    to the smallest string, so the choice is deterministic) and that answer."""
    if not answers:
        return float("nan"), None
    counts = Counter(answers)
    best = min(counts, key=lambda a: (-counts[a], a))
    return counts[best] / len(answers), best


def distinct_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of every distinct prompt (cells are distinct by construction; this keeps
    the statistics honest even if a duplicate slipped in)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = r.get("prompt")
        if key is None or key not in seen:  # rows without a prompt (stand-ins) count as distinct
            seen.add(key)
            out.append(r)
    return out


def summarize(rows: Sequence[dict[str, Any]], task: Task | None = None) -> dict[str, Any]:
    """A cell's numbers: exact_match (+stderr), token_accuracy, n, n_distinct, the chance floor
    (and the random-valid-answer rate when `task` has a small answer set), the prompt+answer
    token-length range and mean compute steps, all over the distinct examples."""
    distinct = distinct_rows(rows)
    em, se = mean_stderr([r["correct"] for r in distinct])
    tok, _ = mean_stderr([r["token_accuracy"] for r in distinct])
    floor, floor_answer = constant_answer_floor([r["answer"] for r in distinct if "answer" in r])
    out: dict[str, Any] = {"exact_match": em, "exact_match_stderr": se, "token_accuracy": tok, "n": len(rows),
                           "n_distinct": len(distinct), "floor": floor, "floor_answer": floor_answer}
    space = VALID_ANSWERS.get(task.name) if task is not None else None
    if space:
        out["random_valid_rate"] = 1.0 / len(space)
    if "length" in (distinct[0] if distinct else {}):
        lengths = [r["length"] for r in distinct]
        out["length_range"] = [min(lengths), max(lengths)]
    for key, name in (("steps", "mean_steps"), ("answer_steps", "mean_steps_answer")):
        steps = [r[key] for r in distinct if r.get(key) is not None]
        if steps:
            out[name] = sum(steps) / len(steps)
    return out


def pooled(cells: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Exact match over the rows of several cells, with the floor of answering each cell's best
    constant (the n-weighted mean of the cells' floors)."""
    out = summarize(rows)
    total = sum(c["n_distinct"] for c in cells)
    out["floor"] = sum(c["floor"] * c["n_distinct"] for c in cells) / total if total else float("nan")
    out.pop("floor_answer", None)
    out.pop("length_range", None)
    return out


# ---- standard errors ---------------------------------------------------------------------------
def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n), lm-eval convention); nan when empty."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def ratio_stderr(windows: Sequence[tuple[float, int]]) -> tuple[float, float]:
    """Mean NLL per token over all windows and its standard error (ratio estimator, clusters =
    windows); the error is nan with fewer than two scored windows."""
    ws = [(s, n) for s, n in windows if n > 0]
    total_n = sum(n for _, n in ws)
    if total_n == 0:
        return float("nan"), float("nan")
    mean = sum(s for s, _ in ws) / total_n
    k = len(ws)
    if k < 2:
        return mean, float("nan")
    nbar = total_n / k
    var = sum((s - mean * n) ** 2 for s, n in ws) / (k * (k - 1))
    return mean, math.sqrt(var) / nbar
