"""Training data: the split curriculum (algorithmic phase -> mix band -> language phase).

- Algorithmic difficulty rises with tokens seen: at progress p in [0, 1] of the ramp, each
  example's difficulty is drawn uniformly from the task's train range up to its level-p value.
- The language fraction rises linearly over the mix band ending at `alg_tokens`, then stays at
  1 - `lang_alg_fraction` (a persistent algorithmic share, 15% by default).
- Held-out prompts: every prompt belongs to one split by a hash of the canonical member of its
  equivalence class (10% eval, 5% val, 85% train), so trivial twins (``add 8+51=`` and
  ``add 51+8=``) share a split. Training rejects eval/val prompts, so the evaluation grid and the
  validation set are disjoint from training, twins included, whatever the seeds (`prompt_split`).
- Held-out cells (`heldout_cell`): distinct prompts, an equal share per difficulty (or all of a
  small difficulty's prompts, enumerated), keyed by task name, split, difficulty and seed only.
- Batches are a deterministic function of (seed, step, row), so a resumed or multi-process run
  sees exactly the data of an uninterrupted single-process one.
- Algorithmic rows pack "BOS prompt answer EOS" examples; only answer and EOS tokens are
  supervised (prompt tokens get target -100).
- With a per-task curriculum (`task_policy`, see `unified.data.task_curriculum`), training rows take
  their task and difficulty from it instead of the smooth schedule; its state changes only at
  validations, so a batch stays a function of (seed, step, curriculum state).
"""
from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from unified.data.tasks import Example, Task, task_of_prompt, train_char_bounds
from unified.errors import ConfigError
from unified.models.base import IGNORE_INDEX
from unified.text.documents import TextCorpus
from unified.text.tokenizer import Tokenizer

_BUCKETS = 20
_SPLIT_OF_BUCKET = {0: "eval", 1: "eval", 2: "val"}  # every other bucket: train


_SPLIT_CODE = {"train": 0, "val": 1, "eval": 2}


def prompt_split(prompt: str, task: Task | None = None) -> str:
    """Which split a prompt belongs to ("train", "val" or "eval"): a SHA-256 of the canonical
    member of its equivalence class (`Task.canonical_prompt`), so trivial twins such as
    ``add 8+51=`` and ``add 51+8=`` always share a split. `task` defaults to the registered
    task named by the prompt's tag; a prompt of no known task is hashed as written."""
    task = task if task is not None else task_of_prompt(prompt)
    key = task.canonical_prompt(prompt) if task is not None else prompt
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % _BUCKETS
    return _SPLIT_OF_BUCKET.get(bucket, "train")


def name_key(name: str) -> int:
    """A stable integer for a name (SHA-256, never `hash()`), to key random streams by name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def stream_rng(*keys: int) -> random.Random:
    """An independent `random.Random` for a tuple of integer keys (seed, stream, step ...)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def sample_split(task: Task, rng: random.Random, split: str, difficulty: int | None = None,
                 max_tries: int = 400) -> Example | None:
    """An example whose prompt belongs to `split`; difficulty fixed, or uniform over the train
    range when None. Returns None when no such prompt turns up (tiny prompt spaces)."""
    lo, hi = task.train_range
    for _ in range(max_tries):
        ex = task.sample(rng, difficulty if difficulty is not None else rng.randint(lo, hi))
        if prompt_split(ex.prompt, task) == split:
            return ex
    return None


def encode_example(tokenizer: Tokenizer, ex: Example) -> tuple[list[int], list[int]]:
    """Token ids of "BOS prompt answer EOS" and their targets (answer and EOS only)."""
    prompt = [tokenizer.bos_id] + tokenizer.encode(ex.prompt)
    answer = tokenizer.encode(ex.answer) + [tokenizer.eos_id]
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


class TaskPolicy(Protocol):
    """Chooses the task and difficulty of a training example (e.g. `TaskCurriculum`)."""

    def sample(self, rng: random.Random) -> tuple[Task, int]: ...


@dataclass
class CurriculumConfig:
    """Token budgets and shapes of the split curriculum."""

    seq_len: int = 256
    tokens_per_step: int = 4096  # global: batch x seq_len x grad_accum x world_size
    alg_tokens: int = 1_000_000  # end of the algorithmic phase
    mix_tokens: int | None = None  # width of the mix band before alg_tokens (default 10% of it)
    ramp_fraction: float = 0.8  # difficulty reaches the top of the train range at this share of alg_tokens
    lang_alg_fraction: float = 0.15  # algorithmic share kept during the language phase

    def __post_init__(self) -> None:
        if self.mix_tokens is None:
            self.mix_tokens = self.alg_tokens // 10
        if not 0.0 <= self.lang_alg_fraction <= 1.0:
            raise ConfigError(f"lang_alg_fraction must be in [0, 1], got {self.lang_alg_fraction}")


class Curriculum:
    """Deterministic batches of the split curriculum for any (step, row)."""

    def __init__(self, cfg: CurriculumConfig, tokenizer: Tokenizer, tasks: Sequence[Task],
                 corpus: TextCorpus | None, seed: int):
        if not tasks:
            raise ConfigError("the curriculum needs at least one algorithmic task")
        self.cfg, self.tok, self.tasks, self.corpus, self.seed = cfg, tokenizer, list(tasks), corpus, seed
        self.task_policy: TaskPolicy | None = None  # per-task curriculum for training rows, if any
        if corpus is not None and len(corpus.train) <= cfg.seq_len + 1:
            raise ConfigError(f"language data {corpus.name!r} has {len(corpus.train)} training tokens, "
                              f"fewer than one sequence of {cfg.seq_len + 1}")

    # ---- schedule ----------------------------------------------------------------------
    def level(self, tokens: int) -> float:
        """Algorithmic difficulty level in [0, 1]: rises linearly to 1 over the ramp."""
        ramp = max(1.0, self.cfg.ramp_fraction * self.cfg.alg_tokens)
        return min(1.0, tokens / ramp)

    def lang_fraction(self, tokens: int) -> float:
        """Share of rows that are language text at `tokens` seen (0 without a corpus)."""
        if self.corpus is None:
            return 0.0
        top = 1.0 - self.cfg.lang_alg_fraction
        start = self.cfg.alg_tokens - self.cfg.mix_tokens
        if tokens >= self.cfg.alg_tokens:
            return top
        if tokens < start or self.cfg.mix_tokens == 0:
            return 0.0
        return top * (tokens - start) / self.cfg.mix_tokens

    def phase(self, tokens: int) -> str:
        """"algorithmic", "mix" or "language"."""
        f = self.lang_fraction(tokens)
        if f == 0.0:
            return "algorithmic"
        return "language" if tokens >= self.cfg.alg_tokens else "mix"

    # ---- rows and batches ----------------------------------------------------------------
    def alg_row(self, rng: random.Random, level: float, split: str = "train") -> tuple[list[int], list[int]]:
        """Packed examples filling seq_len + 1 tokens (PAD-padded, pads unsupervised)."""
        n = self.cfg.seq_len + 1
        ids: list[int] = []
        tgt: list[int] = []
        while True:
            if self.task_policy is not None and split == "train":
                task, difficulty = self.task_policy.sample(rng)
            else:
                task = self.tasks[rng.randrange(len(self.tasks))]
                difficulty = rng.randint(task.train_range[0], task.train_difficulty(level))
            ex = sample_split(task, rng, split, difficulty)
            if ex is None:
                continue
            e_ids, e_tgt = encode_example(self.tok, ex)
            if len(ids) + len(e_ids) > n:
                if not ids:  # one example longer than the row: a configuration error
                    raise ConfigError(f"seq_len {self.cfg.seq_len} is too short for task {task.name!r} "
                                      f"examples of {len(e_ids)} tokens")
                break
            ids += e_ids
            tgt += e_tgt
        pad = n - len(ids)
        return ids + [self.tok.pad_id] * pad, tgt + [IGNORE_INDEX] * pad

    def lang_row(self, rng: random.Random, tokens: np.ndarray) -> tuple[list[int], list[int]]:
        """A random window of seq_len + 1 tokens; every position supervised."""
        n = self.cfg.seq_len + 1
        start = rng.randrange(0, len(tokens) - n + 1)
        window = tokens[start:start + n].astype(np.int64).tolist()
        return window, list(window)

    def row(self, step: int, index: int) -> tuple[list[int], list[int]]:
        """Row `index` of the global batch of optimizer step `step`."""
        tokens = step * self.cfg.tokens_per_step
        rng = stream_rng(self.seed, 1, step, index)
        if self.corpus is not None and rng.random() < self.lang_fraction(tokens):
            return self.lang_row(rng, self.corpus.train)
        return self.alg_row(rng, self.level(tokens))

    def batch(self, step: int, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the given global row indices of step `step`, each (B, seq_len)."""
        seqs = [self.row(step, i) for i in rows]
        ids = torch.tensor([s[0] for s in seqs], dtype=torch.long)
        tgt = torch.tensor([s[1] for s in seqs], dtype=torch.long)
        return ids[:, :-1], tgt[:, 1:]

    def validation_batches(self, n_rows: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed held-out batches (val-split algorithmic rows at full difficulty, plus validation
        text in the final language share) for the validation loss that selects best_model.pt."""
        rng = stream_rng(self.seed, 2)
        f = self.lang_fraction(10**18)
        rows = []
        for _ in range(n_rows):
            if self.corpus is not None and rng.random() < f:
                rows.append(self.lang_row(rng, self.corpus.val))
            else:
                rows.append(self.alg_row(rng, 1.0, split="val"))
        out = []
        for i in range(0, n_rows, batch_size):
            chunk = rows[i:i + batch_size]
            ids = torch.tensor([r[0] for r in chunk], dtype=torch.long)
            tgt = torch.tensor([r[1] for r in chunk], dtype=torch.long)
            out.append((ids[:, :-1], tgt[:, 1:]))
        return out


def heldout_cell(task: Task, split: str, difficulties: Sequence[int], n: int, seed: int) -> list[Example]:
    """A held-out evaluation cell: up to `n` examples of `task` from `split` ("val"/"eval"),
    stratified over `difficulties` and with distinct prompts only.

    Each difficulty gets an equal share of `n` (the remainder goes one each to the smallest
    difficulties), or every distinct prompt of that split and difficulty when fewer exist, so a
    cell may hold fewer than `n`; shares are not moved between difficulties. Prompt spaces of at
    most `ENUMERATE_CAP` prompts are enumerated (`Task.enumerate`); otherwise prompts are drawn
    from the task's generator, keeping the first of each distinct prompt in `split` (sampling
    without replacement). The examples of one difficulty depend only on (task name, split,
    difficulty, seed) — never on the task's position in a list or on the other difficulties —
    and a larger `n` extends a smaller one's examples of that difficulty."""
    if split not in ("val", "eval"):
        raise ConfigError(f"held-out split must be 'val' or 'eval', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"cell size must be an integer >= 0, got {n!r}")
    ds = sorted(set(difficulties))
    if not ds:
        raise ConfigError(f"task {task.name!r}: a held-out cell needs at least one difficulty")
    out: list[Example] = []
    for i, d in enumerate(ds):
        share = n // len(ds) + (1 if i < n % len(ds) else 0)
        if share:
            out += _difficulty_cell(task, split, d, share, seed)
    return out


@functools.lru_cache(maxsize=512)
def _split_pool(task: Task, split: str, difficulty: int) -> tuple[Example, ...] | None:
    """Every example of `split` at `difficulty` in enumeration order, or None when the prompt
    space is too large to enumerate. Cached per task object (enumeration costs ~10k hashes)."""
    pool = task.enumerate(difficulty)
    return None if pool is None else tuple(e for e in pool if prompt_split(e.prompt, task) == split)


def _difficulty_cell(task: Task, split: str, difficulty: int, share: int, seed: int) -> list[Example]:
    """`share` distinct examples of `split` at one difficulty (all of them when fewer exist)."""
    pool = _split_pool(task, split, difficulty)
    if pool is not None and len(pool) <= share:
        return list(pool)
    rng = stream_rng(seed, 3, name_key(task.name), _SPLIT_CODE[split], difficulty)
    picked: dict[str, Example] = {}
    for _ in range(200 * share + 2000):  # ~5-10% of draws land in a held-out split
        if len(picked) == share:
            break
        ex = task.sample(rng, difficulty)
        if ex.prompt not in picked and prompt_split(ex.prompt, task) == split:
            picked[ex.prompt] = ex
    if len(picked) < share and pool is not None:  # a skewed generator on a small space
        rest = [e for e in pool if e.prompt not in picked]
        rng.shuffle(rest)
        for ex in rest[:share - len(picked)]:
            picked[ex.prompt] = ex
    return list(picked.values())


def heldout_sets(tasks: Sequence[Task], split: str, n_per_task: int, seed: int) -> dict[str, list[Example]]:
    """`heldout_cell` over each task's whole train range, by task name (the validation sets)."""
    return {t.name: heldout_cell(t, split, range(t.train_range[0], t.train_range[1] + 1), n_per_task, seed)
            for t in tasks}


def length_range(examples: Sequence[Example], tokenizer: Tokenizer) -> tuple[int, int]:
    """(shortest, longest) token length of "BOS prompt answer EOS" over `examples`."""
    if not examples:
        raise ConfigError("length_range needs at least one example")
    lengths = [len(encode_example(tokenizer, ex)[0]) for ex in examples]
    return min(lengths), max(lengths)


def train_length_range(task: Task, tokenizer: Tokenizer) -> tuple[int, int]:
    """(shortest, longest) token length of "BOS prompt answer EOS" over every training example
    of `task`. Exact for the byte tokenizer (one token per ASCII character plus BOS and EOS,
    from `train_char_bounds`); for other tokenizers it is the range over the enumerated train
    space where small and 2,000 generator draws per difficulty otherwise (an estimate)."""
    if tokenizer.name == "byte":
        lo, hi = train_char_bounds(task)
        return lo + 2, hi + 2
    rng = stream_rng(0, 4, name_key(task.name))
    exs: list[Example] = []
    for d in range(task.train_range[0], task.train_range[1] + 1):
        exs += task.enumerate(d) or [task.sample(rng, d) for _ in range(2000)]
    return length_range(exs, tokenizer)
