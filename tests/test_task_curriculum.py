"""Per-task curricula: scripted validation scores move difficulty and unlocks as designed; state
round-trips through checkpoints; batches depend only on (seed, step, curriculum state); a
training run with a curriculum logs its decisions and resumes onto the same loss curve."""
from __future__ import annotations

import io
import random

import pytest
import torch

from unified.data.batches import Curriculum, CurriculumConfig
from unified.data.batches import prompt_split
from unified.data.task_curriculum import (DEPENDENCIES, TaskCurriculum, TaskCurriculumConfig, competence_scores,
                                          stratified_heldout)
from unified.data.tasks import get_task, resolve_tasks
from unified.errors import CheckpointError, ConfigError
from unified.text.tokenizer import ByteTokenizer
from unified.train.runlog import read_metrics


def _feed(tc: TaskCurriculum, scores: dict[str, float], steps: range) -> list[dict]:
    out = []
    for step in steps:
        out += [{**d, "step": step} for d in tc.update(step, scores)]
    return out


def test_competence_raises_lowers_and_reweights() -> None:
    tc = TaskCurriculum(resolve_tasks("copy,parity"), TaskCurriculumConfig(min_task_evals=2))
    assert tc.level("copy") == 1 and tc.level("parity") == 2
    assert tc.weights()["copy"] == pytest.approx(0.5)
    decisions = _feed(tc, {"copy": 1.0, "parity": 0.0}, range(100, 200, 10))  # 10 validations
    raises = [d for d in decisions if d["action"] == "raise"]
    assert [d["task"] for d in raises] == ["copy"] * 5 and tc.level("copy") == 6  # one level per 2 evals
    assert tc.level("parity") == 2  # cannot go below the bottom of its range
    w = tc.weights()
    assert w["parity"] > 5 * w["copy"] and sum(w.values()) == pytest.approx(1.0)  # unmastered task favoured
    more = _feed(tc, {"copy": 1.0, "parity": 0.0}, range(200, 300, 10))
    assert tc.level("copy") == 8 and [d["action"] for d in more if d["task"] == "copy"] == ["raise", "raise", "mastered"]
    assert tc.weights()["copy"] == pytest.approx(0.1 / 1.2)  # floor weight once mastered (EMA 1)
    lowered = _feed(tc, {"copy": 0.0}, range(400, 460, 10))
    assert [d["action"] for d in lowered if d["task"] == "copy"][:2] == ["forgotten", "lower"]
    assert tc.level("copy") < 8


def test_cooldown_delays_difficulty_changes() -> None:
    tc = TaskCurriculum(resolve_tasks("copy"), TaskCurriculumConfig(min_task_evals=1, cooldown=100))
    steps = [d["step"] for d in _feed(tc, {"copy": 1.0}, range(10, 400, 10)) if d["action"] == "raise"]
    assert steps[:3] == [100, 200, 300]


def test_competence_is_measured_at_the_current_level() -> None:
    exs = stratified_heldout(resolve_tasks("copy,addition"), 6, seed=0)
    # one share each for lengths 1..6; no 1-letter copy prompt is in the val split (26 prompts),
    # and shares are not moved between difficulties, so the cell is one short
    assert not [e for e in get_task("copy").enumerate(1) if prompt_split(e.prompt) == "val"]
    assert [e.meta["difficulty"] for e in exs["copy"]] == [2, 3, 4, 5, 6]
    assert sorted(e.meta["difficulty"] for e in exs["addition"]) == [1, 1, 2, 2, 3, 4]
    tc = TaskCurriculum(resolve_tasks("copy"))
    rows = {"copy": [{"difficulty": 1, "correct": 1.0}, {"difficulty": 5, "correct": 0.0}],
            "parity": [{"difficulty": 2, "correct": 1.0}]}
    assert competence_scores(rows, tc) == {"copy": 1.0}  # level 1: the length-5 miss does not count
    rows = {"copy": [{"difficulty": 2, "correct": 1.0}, {"difficulty": 2, "correct": 0.0}, {"difficulty": 3, "correct": 0.0}]}
    assert competence_scores(rows, tc) == {"copy": 0.5}  # nothing at level 1: the easiest rows stand in
    assert competence_scores({"copy": []}, tc) == {}


def test_dag_unlocks_in_dependency_order_with_replay() -> None:
    cfg = TaskCurriculumConfig(strategy="dag", min_task_evals=1, patience=2, replay=0.25)
    tc = TaskCurriculum(resolve_tasks("all"), cfg)
    unlocked = {n for n, s in tc.state["tasks"].items() if s["unlocked"]}
    assert unlocked == {"copy", "reverse", "compare"}
    assert all(w == 0 for n, w in tc.weights().items() if n not in unlocked)
    order, mastered = [], set()
    for step in range(1, 400):
        for d in tc.update(step, {n: 1.0 for n in tc.by_name}):
            if d["action"] == "mastered":
                mastered.add(d["task"])
            if d["action"] == "unlock":
                assert set(DEPENDENCIES[d["task"]]) <= mastered, d  # never before its dependencies
                assert d["reason"].startswith("dependencies mastered")
                order.append(d["task"])
        w = tc.weights()
        active = [n for n, s in tc.state["tasks"].items() if s["unlocked"] and not s["mastered"]]
        if active and mastered:
            assert sum(w[n] for n in mastered) == pytest.approx(0.25)  # replay share of mastered tasks
        if len(mastered) == len(tc.tasks):
            break
    assert order.index("successor") < order.index("chain") < order.index("addition") < order.index("multiplication")
    assert set(order) == set(DEPENDENCIES) - {"copy", "reverse", "compare"}
    assert tc.weights()["multiplication"] == pytest.approx(1 / len(tc.tasks))  # all mastered: uniform replay


def test_dag_unlocks_the_next_task_when_stalled() -> None:
    tc = TaskCurriculum(resolve_tasks("copy,successor,chain"), TaskCurriculumConfig(strategy="dag", stall_evals=3))
    decisions = _feed(tc, {"copy": 0.0}, range(1, 4))
    assert [(d["action"], d["task"], d["step"]) for d in decisions] == [("unlock", "successor", 3)]
    assert decisions[0]["reason"].startswith("stalled")


def test_state_round_trips_through_a_safe_checkpoint_and_fixes_the_batches() -> None:
    tasks = resolve_tasks("copy,parity,addition")
    tc = TaskCurriculum(tasks, TaskCurriculumConfig(min_task_evals=1))
    _feed(tc, {"copy": 1.0, "parity": 0.5, "addition": 0.95}, range(1, 6))
    buf = io.BytesIO()
    torch.save({"curriculum": tc.state_dict()}, buf)
    buf.seek(0)
    restored = TaskCurriculum(tasks, TaskCurriculumConfig(min_task_evals=1))
    restored.load_state_dict(torch.load(buf, weights_only=True)["curriculum"])
    assert restored.weights() == tc.weights() and restored.state == tc.state
    r1, r2 = random.Random(3), random.Random(3)
    assert [tc.sample(r1) for _ in range(50)] == [restored.sample(r2) for _ in range(50)]

    def curriculum(policy: TaskCurriculum) -> Curriculum:
        cur = Curriculum(CurriculumConfig(seq_len=64, tokens_per_step=256, alg_tokens=10_000), ByteTokenizer(),
                         tasks, None, seed=1)
        cur.task_policy = policy
        return cur

    a, b = curriculum(tc), curriculum(restored)
    assert torch.equal(a.batch(5, range(4))[0], b.batch(5, range(4))[0])
    fresh = curriculum(TaskCurriculum(tasks))  # another state, another batch
    assert not torch.equal(a.batch(5, range(4))[0], fresh.batch(5, range(4))[0])
    with pytest.raises(ConfigError, match="does not match"):
        TaskCurriculum(resolve_tasks("copy"), TaskCurriculumConfig(min_task_evals=1)).load_state_dict(tc.state_dict())


def test_dag_batches_hold_only_unlocked_tasks() -> None:
    tasks = resolve_tasks("all")
    cur = Curriculum(CurriculumConfig(seq_len=128, tokens_per_step=512, alg_tokens=10_000), ByteTokenizer(),
                     tasks, None, seed=0)
    cur.task_policy = TaskCurriculum(tasks, TaskCurriculumConfig(strategy="dag"))
    tags = set()
    for row in cur.batch(0, range(8))[0].tolist():
        starts = [i for i, t in enumerate(row) if t == ByteTokenizer.bos_id]
        tags |= {ByteTokenizer().decode(row[i + 1:i + 8]).split(" ")[0] for i in starts}
    assert tags and tags <= {"copy", "rev", "cmp"}


def _fake_scores(monkeypatch) -> None:
    """Every held-out validation prompt counts as answered correctly (so the curriculum moves)."""
    def score(model, tokenizer, examples, batch_size=64):
        return [{"task": e.meta["task"], "difficulty": e.meta["difficulty"], "correct": 1.0, "token_accuracy": 1.0,
                 "prediction": e.answer, "steps": None} for e in examples]

    monkeypatch.setattr("unified.train.validation.score_examples", score)


class _Interrupted(Exception):
    pass


def test_training_logs_decisions_plots_and_resumes_onto_the_same_curve(tmp_path, monkeypatch) -> None:
    from unified.train.config import TrainConfig
    from unified.train.trainer import Trainer

    class KilledAtStep6(Trainer):
        def checkpoint_and_validate(self, metrics_path):
            super().checkpoint_and_validate(metrics_path)
            if self.step == 6:
                raise _Interrupted

    _fake_scores(monkeypatch)
    common = dict(variant="baseline", model_size="pico", max_steps=12, eval_every=1, log_every=2, batch_size=2,
                  seq_len=64, eval_samples=6, val_rows=2, total_tokens=100_000, lang_dataset="none",
                  alg_tasks="compare,successor,chain", use_task_curriculum=True, task_curriculum_strategy="dag",
                  curriculum_min_task_evals=1, model_overrides={"d_model": 32, "n_layers": 1})
    Trainer(TrainConfig.from_flat(output_dir=str(tmp_path / "a"), **common)).run()
    with pytest.raises(_Interrupted):
        KilledAtStep6(TrainConfig.from_flat(output_dir=str(tmp_path / "b"), **common)).run()
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 6
    Trainer(TrainConfig.from_flat(output_dir=str(tmp_path / "b"), resume=True, **common)).run()
    recs = {k: read_metrics(tmp_path / k / "metrics.jsonl") for k in "ab"}
    decisions = [r for r in recs["a"] if r["kind"] == "curriculum" and r["action"] != "state"]
    assert {"raise", "mastered", "unlock"} <= {d["action"] for d in decisions}
    unlock = next(d for d in decisions if d["action"] == "unlock")
    assert unlock["task"] == "successor" and unlock["step"] <= 6  # before the interruption: state must carry over
    assert any(d["action"] == "raise" and d["task"] == "successor" for d in decisions)  # scored once unlocked
    assert (tmp_path / "a" / "curriculum.png").stat().st_size > 0
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ckpt["curriculum"]["state"]["tasks"]["successor"]["unlocked"] is True
    loss = {k: [r["loss"] for r in v if r["kind"] == "train"] for k, v in recs.items()}
    assert len(loss["a"]) == len(loss["b"]) == 6
    assert loss["b"] == pytest.approx(loss["a"], rel=1e-5, abs=1e-6)
    snaps = {k: [r for r in v if r.get("action") == "state"] for k, v in recs.items()}
    assert len(snaps["a"]) == len(snaps["b"]) == 12 and snaps["a"] == snaps["b"]
    # the resume contract: a curriculum option that differs from the stored run is refused
    with pytest.raises(ConfigError, match="alg_tasks"):
        Trainer(TrainConfig.from_flat(output_dir=str(tmp_path / "b"), resume=True,
                                      **{**common, "alg_tasks": "compare,successor", "max_steps": 14})).run()
