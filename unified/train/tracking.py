"""Experiment tracking: `train.py --report_to none|tensorboard|wandb` (HF Trainer's convention).

Every record training appends to metrics.jsonl is also handed to the tracker, so the tracker
shows exactly the numbers of metrics.jsonl: each numeric field of a record of kind K is the
scalar `K/<field>` at the record's step (e.g. `train/loss`, `val/val_loss`,
`val/val_em/parity`); nested dicts are flattened with "/"; strings are skipped.

- `none` (default): nothing beyond metrics.jsonl.
- `tensorboard`: event files in the run folder itself, through `torch.utils.tensorboard`, so
  `tensorboard --logdir runs` lists every run by its folder name. A resumed run starts its
  writer with `purge_step`, so TensorBoard hides the events logged after the checkpoint, as
  `read_metrics` drops those records.
- `wandb`: only when the `wandb` package is installed (never required). It runs in offline mode
  (files under the run folder, `wandb sync` uploads them later) unless the user is logged in
  (WANDB_API_KEY set, or an api.wandb.ai entry in ~/.netrc as `wandb login` writes) or WANDB_MODE
  says otherwise. The W&B run id is kept in the run folder, so `--resume` continues the same run
  (W&B ignores steps it has already seen: records logged after the checkpoint and logged again
  on resume keep their first values there, unlike TensorBoard and metrics.jsonl).
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from unified.errors import ConfigError, UnknownNameError

REPORT_TO = ("none", "tensorboard", "wandb")
WANDB_ID_FILE = "wandb_run_id.txt"


def check_report_to(name: str) -> None:
    """Reject an unknown --report_to, or one whose package is not installed, before training."""
    if name not in REPORT_TO:
        raise UnknownNameError("--report_to", name, REPORT_TO)
    if name == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--report_to tensorboard needs the tensorboard package (pip install tensorboard); "
                          "or use --report_to none")
    if name == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("--report_to wandb needs the wandb package, which is optional (pip install wandb); "
                          "or use --report_to tensorboard / none")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record as `<kind>/<field>` tags (nested dicts flattened
    with "/"; `kind` and `step` are the tag prefix and the x axis, not scalars)."""
    kind = str(record.get("kind", "metrics"))
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    for key, value in record.items():
        if key not in ("kind", "step"):
            walk(f"{kind}/{key}", value)
    return out


class Tracker:
    """The `none` tracker, and the interface of the others: `log` one metrics record, `close`."""

    name = "none"

    def log(self, record: dict[str, Any]) -> None:
        """Send one metrics.jsonl record (records without a step are skipped)."""

    def close(self) -> None:
        """Flush and release the tracker."""


class TensorBoardTracker(Tracker):
    """Scalars into TensorBoard event files in the run folder."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None  # records after the checkpoint are replaced
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)

    def log(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if not isinstance(step, int) or record.get("kind") == "resume":
            return
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()


def wandb_logged_in() -> bool:
    """Whether W&B credentials are present (WANDB_API_KEY, or ~/.netrc as `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


class WandbTracker(Tracker):
    """Scalars to Weights & Biases; offline unless logged in; one W&B run per run folder."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
        id_file.write_text(run_id + "\n")
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "unified"), name=run_dir.name, id=run_id,
                              dir=str(run_dir), config=config, mode=mode, resume="allow")
        self.mode = mode

    def log(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if not isinstance(step, int) or record.get("kind") == "resume":
            return
        self.run.log(scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(report_to: str, run_dir: str | Path, config: dict[str, Any] | None = None,
                 resume_step: int | None = None) -> Tracker:
    """The tracker named by --report_to for a run folder; `resume_step` is the checkpoint's step
    when the run resumes (events after it are superseded)."""
    check_report_to(report_to)
    run_dir = Path(run_dir)
    if report_to == "tensorboard":
        return TensorBoardTracker(run_dir, resume_step)
    if report_to == "wandb":
        return WandbTracker(run_dir, config or {})
    return Tracker()
