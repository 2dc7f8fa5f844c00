"""Per-task curricula for the algorithmic phase (`--use_task_curriculum`).

Instead of the foundation's smooth schedule (difficulty rising with tokens seen, tasks uniform),
each task keeps its own difficulty level, moved by its competence:
  - competence = EMA of the task's validation exact match on held-out prompts at difficulty <= its
    level (the Trainer's periodic validation);
  - `competence` strategy: after `min_task_evals` validations at a level (and `cooldown` steps),
    EMA >= `raise_at` raises the level by one, EMA <= `lower_at` lowers it; rows are sampled
    with weight `floor + (1 - EMA)`, so unmastered tasks get more of the batch; with probability
    `jitter` a row replays an easier difficulty (uniform below the level);
  - `dag` strategy: the same per task, but tasks unlock in dependency order (`DEPENDENCIES`): a
    task opens when all its dependencies are mastered (top of the train range, EMA >= `unlock_at`
    for `patience` validations in a row); mastered tasks are replayed with a `replay` share; if
    nothing unlocks for `stall_evals` validations the next locked task opens anyway.
Validation prompts for competence are spread evenly over each train range (`stratified_heldout`).
Batches stay a deterministic function of (seed, step, curriculum state): the state changes only at
validations, is saved in checkpoints as a plain dict and restored on resume. Every decision is
returned as a record for metrics.jsonl (kind "curriculum") and drawn by `unified.train.plots.plot_curriculum`.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from unified.data.batches import heldout_sets
from unified.data.tasks import Example, Task
from unified.errors import ConfigError, require

STRATEGIES = ("competence", "dag")

# Which skills a task builds on. copy/reverse/compare read and emit digit strings; successor adds a
# carry to that; chain is running arithmetic on digits; addition is carries over full numbers;
# multiplication and mod_add build on addition; parity is a running state over a scanned string
# (copy); dyck needs a stack discipline (reverse).
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "copy": (), "reverse": (), "compare": (),
    "parity": ("copy",), "dyck": ("reverse",),
    "successor": ("copy", "reverse", "compare"),
    "chain": ("successor",),
    "addition": ("chain",),
    "multiplication": ("addition",), "mod_add": ("addition",),
    "mqar": ("copy",),  # recall: read symbols and reproduce them, looked up by key
}


@dataclass
class TaskCurriculumConfig:
    """Thresholds and pacing of the per-task curriculum (see the module docstring)."""

    strategy: str = "competence"
    ema: float = 0.5  # weight of the newest validation score
    raise_at: float = 0.9
    lower_at: float = 0.3
    cooldown: int = 0  # steps between two difficulty changes of one task
    min_task_evals: int = 2  # validations at a level before it may change
    jitter: float = 0.2  # share of rows that replay an easier difficulty
    floor: float = 0.1  # minimum sampling weight (before normalizing)
    unlock_at: float = 0.8  # dag: EMA a dependency needs at the top of its range ...
    patience: int = 2  # ... for this many validations in a row
    replay: float = 0.2  # dag: share of rows for mastered tasks while others are being learned
    stall_evals: int = 10  # dag: open the next task after this many validations without an unlock

    def check(self) -> None:
        """One clear message per impossible value (`check`, not `validate`: validation is the
        trainer's periodic held-out evaluation, which this curriculum follows)."""
        require(self.strategy in STRATEGIES,
                f"unknown --task_curriculum_strategy {self.strategy!r}; accepted: {', '.join(STRATEGIES)}")
        for name in ("ema", "raise_at", "lower_at", "jitter", "unlock_at", "replay"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, f"curriculum {name} must be in [0, 1], got {v}")
        require(self.lower_at < self.raise_at, f"curriculum lower_at ({self.lower_at}) must be below raise_at ({self.raise_at})")
        for name in ("cooldown", "floor"):
            require(getattr(self, name) >= 0, f"--curriculum_{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_task_evals", "patience", "stall_evals"):
            require(getattr(self, name) >= 1, f"--curriculum_{name} must be >= 1, got {getattr(self, name)}")


class TaskCurriculum:
    """Per-task levels, competence EMAs, unlocks and sampling weights; plain-dict state."""

    def __init__(self, tasks: Sequence[Task], cfg: TaskCurriculumConfig | None = None):
        if not tasks:
            raise ConfigError("the task curriculum needs at least one task")
        self.cfg = cfg or TaskCurriculumConfig()
        self.cfg.check()
        self.tasks = list(tasks)
        self.by_name = {t.name: t for t in self.tasks}
        names = set(self.by_name)
        # dependencies outside the selected tasks are dropped; the order is a topological one
        self.deps = {t.name: tuple(d for d in DEPENDENCIES.get(t.name, ()) if d in names) for t in self.tasks}
        self.order = self._topological()
        dag = self.cfg.strategy == "dag"
        self.state: dict[str, Any] = {
            "strategy": self.cfg.strategy, "evals_since_unlock": 0,
            "tasks": {t.name: {"level": t.train_range[0], "ema": None, "evals_at_level": 0, "last_change": 0,
                               "streak": 0, "mastered": False, "unlocked": not (dag and self.deps[t.name])}
                      for t in self.tasks}}
        self._refresh()

    def _topological(self) -> list[str]:
        order: list[str] = []
        pending = [t.name for t in self.tasks]
        while pending:
            ready = [n for n in pending if all(d in order for d in self.deps[n])]
            if not ready:  # cannot happen with DEPENDENCIES; guard against edits making a cycle
                raise ConfigError(f"task dependency cycle among {pending}")
            order += ready
            pending = [n for n in pending if n not in ready]
        return order

    # ---- sampling ---------------------------------------------------------------------------
    def weights(self) -> dict[str, float]:
        """Share of algorithmic rows per task (sums to 1; locked tasks get 0)."""
        return dict(self._weights)

    def level(self, name: str) -> int:
        """Current difficulty level (top of the sampled range) of a task."""
        return int(self.state["tasks"][name]["level"])

    def sample(self, rng: random.Random) -> tuple[Task, int]:
        """A (task, difficulty) for one training example, drawn with `rng` from the current state."""
        i = bisect.bisect_right(self._cum, rng.random() * self._cum[-1])
        task = self.tasks[min(i, len(self.tasks) - 1)]
        top = self.level(task.name)
        lo = task.train_range[0]
        if top > lo and rng.random() < self.cfg.jitter:
            return task, rng.randint(lo, top - 1)
        return task, top

    def _refresh(self) -> None:
        st = self.state["tasks"]
        raw = {n: self.cfg.floor + 1.0 - (st[n]["ema"] or 0.0) for n in self.by_name}
        if self.cfg.strategy == "dag":
            active = [n for n in self.by_name if st[n]["unlocked"] and not st[n]["mastered"]]
            mastered = [n for n in self.by_name if st[n]["unlocked"] and st[n]["mastered"]]
            w = {n: 0.0 for n in self.by_name}
            if active:
                share = 1.0 - self.cfg.replay if mastered else 1.0
                total = sum(raw[n] for n in active)
                w.update({n: share * raw[n] / total for n in active})
            if mastered:
                share = self.cfg.replay if active else 1.0
                w.update({n: share / len(mastered) for n in mastered})
        else:
            total = sum(raw.values())
            w = {n: raw[n] / total for n in self.by_name}
        self._weights = w
        cum, acc = [], 0.0
        for t in self.tasks:
            acc += w[t.name]
            cum.append(acc)
        self._cum = cum

    # ---- updates ----------------------------------------------------------------------------
    def update(self, step: int, scores: dict[str, float]) -> list[dict[str, Any]]:
        """Fold one validation's exact-match scores (task -> EM at difficulty <= its level) into the
        state; returns the decisions taken (raise / lower / mastered / forgotten / unlock)."""
        cfg, st = self.cfg, self.state["tasks"]
        decisions: list[dict[str, Any]] = []

        def decide(action: str, name: str, **extra: Any) -> None:
            decisions.append({"action": action, "task": name, "level": st[name]["level"],
                              "ema": st[name]["ema"], **extra})

        for name in self.order:
            s, task = st[name], self.by_name[name]
            if not s["unlocked"] or name not in scores:
                continue
            em = float(scores[name])
            s["ema"] = em if s["ema"] is None else (1 - cfg.ema) * s["ema"] + cfg.ema * em
            s["evals_at_level"] += 1
            lo, hi = task.train_range
            may_move = s["evals_at_level"] >= cfg.min_task_evals and step - s["last_change"] >= cfg.cooldown
            if may_move and s["ema"] >= cfg.raise_at and s["level"] < hi:
                s["level"] += 1
                s["evals_at_level"], s["last_change"] = 0, step
                decide("raise", name, reason=f"ema >= {cfg.raise_at}")
            elif may_move and s["ema"] <= cfg.lower_at and s["level"] > lo:
                s["level"] -= 1
                s["evals_at_level"], s["last_change"] = 0, step
                decide("lower", name, reason=f"ema <= {cfg.lower_at}")
            at_top = s["level"] == hi and s["evals_at_level"] >= 1
            s["streak"] = s["streak"] + 1 if at_top and s["ema"] >= cfg.unlock_at else 0
            was = s["mastered"]
            s["mastered"] = s["streak"] >= cfg.patience
            if s["mastered"] != was:
                decide("mastered" if s["mastered"] else "forgotten", name)
        if cfg.strategy == "dag":
            decisions += self._unlocks()
        self._refresh()
        return decisions

    def _unlocks(self) -> list[dict[str, Any]]:
        st = self.state["tasks"]
        opened = []
        for name in self.order:
            if not st[name]["unlocked"] and all(st[d]["mastered"] for d in self.deps[name]):
                st[name]["unlocked"] = True
                opened.append({"action": "unlock", "task": name, "level": st[name]["level"], "ema": None,
                               "reason": "dependencies mastered: " + (", ".join(self.deps[name]) or "none")})
        locked = [n for n in self.order if not st[n]["unlocked"]]
        self.state["evals_since_unlock"] = 0 if opened else self.state["evals_since_unlock"] + 1
        if not opened and locked and self.state["evals_since_unlock"] >= self.cfg.stall_evals:
            name = locked[0]
            st[name]["unlocked"] = True
            self.state["evals_since_unlock"] = 0
            opened.append({"action": "unlock", "task": name, "level": st[name]["level"], "ema": None,
                           "reason": f"stalled: no unlock for {self.cfg.stall_evals} validations"})
        return opened

    # ---- state, logging -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain dicts/numbers (fits `torch.load(weights_only=True)`)."""
        return {"config": asdict(self.cfg), "state": {**self.state,
                                                      "tasks": {k: dict(v) for k, v in self.state["tasks"].items()}}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore a `state_dict`; the strategy and task set must match the run's."""
        state = saved["state"]
        if state.get("strategy") != self.cfg.strategy or set(state["tasks"]) != set(self.by_name):
            raise ConfigError(f"saved curriculum ({state.get('strategy')}, tasks {sorted(state['tasks'])}) does not "
                              f"match this run ({self.cfg.strategy}, tasks {sorted(self.by_name)})")
        self.state = {**state, "tasks": {k: dict(v) for k, v in state["tasks"].items()}}
        self._refresh()

    def snapshot(self) -> dict[str, Any]:
        """Flat per-task levels (0..1 within the train range), EMAs, weights, unlocked flags for
        one metrics.jsonl record."""
        out: dict[str, Any] = {}
        for t in self.tasks:
            s = self.state["tasks"][t.name]
            lo, hi = t.train_range
            out[f"level/{t.name}"] = s["level"]
            out[f"level_frac/{t.name}"] = (s["level"] - lo) / max(1, hi - lo)
            out[f"ema/{t.name}"] = s["ema"]
            out[f"weight/{t.name}"] = self._weights[t.name]
            out[f"unlocked/{t.name}"] = s["unlocked"]
        return out

    def mean_level(self) -> float:
        """Mean level across tasks as a fraction of each train range (logged as alg_level)."""
        fr = [(self.level(t.name) - t.train_range[0]) / max(1, t.train_range[1] - t.train_range[0]) for t in self.tasks]
        return sum(fr) / len(fr)


def stratified_heldout(tasks: Sequence[Task], n_per_task: int, seed: int) -> dict[str, list[Example]]:
    """The validation sets, by task name: `heldout_cell` of the `val` split over each task's whole
    train range (distinct prompts, an equal share per difficulty, all of a difficulty's val
    prompts when fewer exist), so competence is measurable at every level; used with and without
    a task curriculum."""
    return heldout_sets(tasks, "val", n_per_task, seed)


def competence_scores(rows_by_task: dict[str, list[dict[str, Any]]], curriculum: TaskCurriculum) -> dict[str, float]:
    """Exact match per task over scored validation rows at difficulty <= the task's level, or at the
    easiest difficulty that has rows when none is that easy (tasks without rows are left out)."""
    out = {}
    for name, rows in rows_by_task.items():
        if name not in curriculum.by_name or not rows:
            continue
        cap = max(curriculum.level(name), min(r["difficulty"] for r in rows))
        sel = [r["correct"] for r in rows if r["difficulty"] <= cap]
        out[name] = sum(sel) / len(sel)
    return out
