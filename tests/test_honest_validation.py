"""Validation metrics are what their names say (issue 14): `val_loss`, `val_lang_loss`,
`val_lang_bpb` and the summary's losses are cross-entropy only, an auxiliary loss (ACT's ponder
cost) is logged apart; the language loss reports its standard error over windows; ACT's halting
collapse is flagged once."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unified.train.config import TrainConfig
from unified.train.trainer import Trainer

SEQ = 32


def _act_trainer(tmp_path: Path, **kw) -> Trainer:
    """A pico ACT run with a huge ponder weight, so any aux leaking into a metric shows."""
    cfg = dict(variant="act", model_size="pico", batch_size=4, seq_len=SEQ, lang_dataset="procedural",
               alg_tasks="parity,copy", max_steps=2, eval_every=1, log_every=1, output_dir=str(tmp_path / "run"),
               eval_samples=2, val_rows=4, val_lang_tokens=SEQ * 10, model_overrides={"K": 2, "lambda_ponder": 10.0})
    cfg.update(kw)
    return Trainer(TrainConfig.from_flat(**cfg))


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def test_validation_losses_are_cross_entropy_only(tmp_path: Path) -> None:
    """With lambda_ponder = 10 (aux ~ 25 nats), val_loss and val_lang_loss equal the pure
    cross-entropy recomputed here from the logits, val_aux_loss holds the ponder cost, and the
    language stderr is the spread of the per-window losses."""
    t = _act_trainer(tmp_path, eval_every=10)
    rec = t.validate()
    model = t.model.eval()
    with torch.no_grad():
        ce_sum, n = 0.0, 0
        for x, y in t.val_batches:
            logits = model(x).logits
            keep = y != -100
            ce_sum += float(F.cross_entropy(logits[keep].float(), y[keep], reduction="sum"))
            n += int(keep.sum())
        ids = torch.as_tensor(t.corpus.val[:10 * SEQ + 1].astype("int64"))
        x, y = ids[:-1].view(10, SEQ), ids[1:].view(10, SEQ)
        logits = model(x).logits
        per_window = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(10, SEQ).mean(1)
    assert rec["val_loss"] == pytest.approx(ce_sum / n, rel=1e-5)
    assert rec["val_lang_loss"] == pytest.approx(float(per_window.mean()), rel=1e-5)
    assert rec["val_lang_loss_stderr"] == pytest.approx(float(per_window.std() / math.sqrt(10)), rel=1e-4)
    bpb = rec["val_lang_loss"] / math.log(2) / t.corpus.bytes_per_token
    assert rec["val_lang_bpb"] == pytest.approx(bpb, rel=1e-9)
    assert rec["val_lang_tokens"] == 10 * SEQ and rec["val_lang_windows"] == 10
    assert rec["val_aux_loss"] > 10.0  # the ponder cost is there, under its own name
    assert rec["val_loss"] < math.log(t.tokenizer.vocab_size) + 1.0  # and not added to the loss


def test_best_model_and_summary_exclude_the_ponder_cost(tmp_path: Path) -> None:
    """best_val_loss is the lowest cross-entropy val_loss; the summary's first/final loss are
    the train records' ce_loss; a train record's loss is the objective ce_loss + aux_loss."""
    t = _act_trainer(tmp_path)
    summary = t.run()
    run = Path(summary["output_dir"])
    vals, trains = _records(run, "val"), _records(run, "train")
    assert len(vals) == 2 and len(trains) == 2
    assert summary["best_val_loss"] == min(v["val_loss"] for v in vals)
    assert all(v["val_aux_loss"] > 10.0 and v["val_loss"] < 10.0 for v in vals)
    for r in trains:
        assert r["loss"] == pytest.approx(r["ce_loss"] + r["aux_loss"], rel=1e-9)
        assert r["aux_loss"] > 10.0
    assert summary["final_loss"] == trains[-1]["ce_loss"] and summary["first_loss"] == trains[0]["ce_loss"]


def test_language_validation_cap_and_batching(tmp_path: Path) -> None:
    """val_lang_tokens caps the held-out tokens (whole windows), and so do the tokens trained
    between two validations; the result does not depend on how many windows go through the
    model at once."""
    a = _act_trainer(tmp_path / "a", val_lang_tokens=SEQ * 7 + 5, batch_size=3, eval_every=10).validate()
    b = _act_trainer(tmp_path / "b", val_lang_tokens=SEQ * 7, batch_size=4, eval_every=10).validate()
    assert a["val_lang_windows"] == b["val_lang_windows"] == 7
    assert a["val_lang_loss"] == pytest.approx(b["val_lang_loss"], rel=1e-6)
    c = _act_trainer(tmp_path / "c", val_lang_tokens=10**6, batch_size=4, eval_every=2).validate()
    assert c["val_lang_tokens"] == 2 * 4 * SEQ  # eval_every x tokens per step


def test_halting_collapse_warns_once_and_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An ACT run whose halting sits at min_K everywhere logs halting_collapsed = 1 in its train
    records and prints one warning line, not one per step."""
    t = _act_trainer(tmp_path, lang_dataset="none", max_steps=3, eval_every=10)
    with torch.no_grad():
        t.model.halt.bias.fill_(30.0)  # p = 1 at the first halting step: R = 1, no gradient to the unit
    t.run()
    trains = _records(t.out, "train")
    assert [r["halting_collapsed"] for r in trains] == [1.0, 1.0, 1.0]
    out = capsys.readouterr()
    assert (out.out + out.err).count("halting collapsed to min_K") == 1


def test_healthy_act_run_reports_no_collapse(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """At the initial halting (every position uses all K steps) nothing is flagged."""
    t = _act_trainer(tmp_path, lang_dataset="none", max_steps=2, eval_every=10)
    t.run()
    assert all(r["halting_collapsed"] == 0.0 for r in _records(t.out, "train"))
    out = capsys.readouterr()
    assert "halting collapsed" not in out.out + out.err
