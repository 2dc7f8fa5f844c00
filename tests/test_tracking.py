"""--report_to: TensorBoard event files hold exactly metrics.jsonl's numbers (read back offline with
tensorboard's EventAccumulator), resumed runs purge superseded steps, wandb is optional and offline
unless logged in."""
from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from unified.errors import ConfigError, UnknownNameError
from unified.train.runlog import read_metrics
from unified.train.tracking import WANDB_ID_FILE, Tracker, check_report_to, open_tracker, scalars

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_are_the_numbers_of_a_record_under_its_kind() -> None:
    rec = {"kind": "val", "step": 7, "tokens": 100, "val_loss": 1.5, "val_em/parity": 0.25, "phase": "mix",
           "nan": float("nan"), "flag": True, "levels": {"parity": 3, "copy": {"x": 1.0}}}
    assert scalars(rec) == {"val/tokens": 100.0, "val/val_loss": 1.5, "val/val_em/parity": 0.25,
                            "val/levels/parity": 3.0, "val/levels/copy/x": 1.0}


def test_tensorboard_scalars_land_and_a_resume_purges_superseded_steps(tmp_path: Path) -> None:
    t = open_tracker("tensorboard", tmp_path)
    for step in range(1, 11):
        t.log({"kind": "train", "step": step, "loss": 1.0 / step, "phase": "algorithmic"})
    t.log({"kind": "val", "step": 10, "val_loss": 0.5})
    t.close()
    ev = _events(tmp_path)
    assert set(ev) == {"train/loss", "val/val_loss"}
    assert ev["train/loss"] == [(s, pytest.approx(1.0 / s)) for s in range(1, 11)]
    t = open_tracker("tensorboard", tmp_path, resume_step=6)  # the checkpoint was at step 6
    for step in range(7, 9):
        t.log({"kind": "train", "step": step, "loss": 100.0 + step})
    t.log({"kind": "resume", "step": 6})
    t.close()
    ev = _events(tmp_path)
    assert [s for s, _ in ev["train/loss"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert ev["train/loss"][-1][1] == pytest.approx(108.0) and ev["train/loss"][5][1] == pytest.approx(1 / 6)


def test_report_to_names_and_missing_packages_are_one_line_errors(monkeypatch) -> None:
    with pytest.raises(UnknownNameError, match="--report_to.*none, tensorboard, wandb"):
        check_report_to("mlflow")
    assert type(open_tracker("none", ".")) is Tracker
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install wandb"):
        check_report_to("wandb")


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path: Path):
    calls: dict = {"init": [], "log": [], "finish": 0}
    mod = types.ModuleType("wandb")
    mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    class Run:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finish"] += 1

    def init(**kw):
        calls["init"].append(kw)
        return Run()

    mod.init = init
    mod.util = types.SimpleNamespace(generate_id=lambda: f"id{len(calls['init'])}")
    monkeypatch.setitem(sys.modules, "wandb", mod)
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return calls


def test_wandb_is_offline_unless_logged_in_and_keeps_one_run_per_folder(tmp_path: Path, fake_wandb, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    t = open_tracker("wandb", run, {"lr": 1e-3})
    t.log({"kind": "train", "step": 3, "loss": 2.0, "phase": "mix"})
    t.log({"kind": "resume", "step": 3})
    t.close()
    first = fake_wandb["init"][0]
    assert first["mode"] == "offline" and first["dir"] == str(run) and first["config"] == {"lr": 1e-3}
    assert fake_wandb["log"] == [(3, {"train/loss": 2.0})] and fake_wandb["finish"] == 1
    monkeypatch.setenv("WANDB_API_KEY", "k")
    open_tracker("wandb", run).close()  # a resumed run: same W&B run id, online once logged in
    second = fake_wandb["init"][1]
    assert second["mode"] == "online" and second["id"] == first["id"] == (run / WANDB_ID_FILE).read_text().strip()


def test_training_with_tensorboard_logs_exactly_the_metrics_jsonl_numbers(tmp_path: Path) -> None:
    from unified.train.config import TrainConfig
    from unified.train.resolve import resolve
    from unified.train.trainer import train

    out = tmp_path / "run"
    cfg = TrainConfig.from_flat(model_size="pico", max_steps=8, eval_every=4, log_every=2, batch_size=2, seq_len=32,
                                eval_samples=1, val_rows=2, total_tokens=10_000, lang_dataset="none",
                                alg_tasks="parity,copy", output_dir=str(out), device="cpu", report_to="tensorboard")
    train(cfg)
    ev = _events(out)
    records = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") in ("train", "val")]
    assert {r["kind"] for r in records} == {"train", "val"}
    expected = {}
    for r in records:
        for tag, value in scalars(r).items():
            expected.setdefault(tag, []).append((r["step"], value))
    assert set(ev) == set(expected) and "train/loss" in ev and "val/val_loss" in ev
    for tag, points in expected.items():
        assert [s for s, _ in ev[tag]] == [s for s, _ in points], tag
        assert [v for _, v in ev[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    with pytest.raises(UnknownNameError, match="--report_to"):
        resolve(TrainConfig.from_flat(report_to="tensorbord"))
