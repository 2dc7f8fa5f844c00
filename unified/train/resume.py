"""The resume contract: what `train.py --resume` keeps, what it lets change, and how it records it.

The stored configuration (config.json, else the one inside last.pt) is the source of truth:
- options that *define the run* (`fixed_options`: variant, size, model options, seed, tokenizer, data,
  budgets, validation set ...) must match it, or the resume is refused with one line listing
  every difference; `--batch_size` / `--grad_accum` may change only where the global batch (tokens
  per step) stays the same (e.g. another process count);
- options that *may change* (`MUTABLE`: learning rate and schedule after a divergence,
  `--max_steps` to extend, `--eval_every`, logging and `--report_to`, `--dtype`) take effect
  from the resume point and are recorded;
- `PER_INVOCATION` options (device, compile, matmul precision, the debugging aid) belong to this
  process only.
An option not given on the command line takes the stored value. config.json keeps the original
arguments (`arguments`) and an append-only `history` of resumes with what each changed; its
top-level keys describe the run as it continues now.

`Checkpointing` is the Trainer's save / restore half (last.pt and best_model.pt).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from unified.errors import CheckpointError, ConfigError, TrainingError
from unified.models.optioncheck import conforms
from unified.train.checkpoint import (atomic_write_text, check_fields, check_state_dict, load_checkpoint,
                                      remove_stale_temps, rng_state, save_checkpoint, set_rng_state)
from unified.train.config import LEAVES, LEGACY_FLAT, TrainConfig
from unified.train.runlog import append_metrics

MUTABLE = ("lr", "min_lr_ratio", "warmup_steps", "schedule", "max_steps", "weight_decay", "grad_clip",
           "eval_every", "log_every", "report_to", "dtype")
PER_INVOCATION = ("output_dir", "resume", "device", "compile", "matmul_precision", "debug_nan_step")
GLOBAL_BATCH = ("batch_size", "grad_accum")
LANGUAGE = ("lang_dataset", "lang_data")
# every other TrainConfig option defines the run (FIXED), including options added later


def fixed_options(cfg: Any = None) -> list[str]:
    """The TrainConfig options (flat names) that define a run and must match on --resume."""
    skip = set(MUTABLE) | set(PER_INVOCATION) | set(GLOBAL_BATCH) | set(LANGUAGE)
    return [name for name in LEAVES if name not in skip]


def given_fields(cfg: TrainConfig) -> set[str]:
    """For callers without a command line: the options that differ from the TrainConfig defaults."""
    default = TrainConfig().flatten()
    return {name for name, value in cfg.flatten().items() if value != default[name]}


def read_stored_config(out: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(config.json as a dict, or None; a note when it exists but cannot be used). Older option
    names (`LEGACY_FLAT`) are read as today's."""
    path = out / "config.json"
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path} does not hold a JSON object"
    return _current_names(data), None


def _current_names(stored: dict[str, Any]) -> dict[str, Any]:
    out = dict(stored)
    for old, new in LEGACY_FLAT.items():
        if old in out:
            out.setdefault(new, out.pop(old))
    return out


def _mistyped(stored: dict[str, Any]) -> str | None:
    """'option = value, not the declared type' for the first stored option of the wrong type, else None."""
    for name, leaf in LEAVES.items():
        if name in stored and not conforms(stored[name], leaf.type):
            return f"{name} = {stored[name]!r}, not of its type ({leaf.type})"
    for name, kind in (("tokens_per_step", int), ("history", list), ("arguments", dict)):
        if stored.get(name) is not None and not isinstance(stored[name], kind):
            return f"{name} = {stored[name]!r}, not a {kind.__name__}"
    return None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # what the value looks like once stored in config.json


def _show(name: str, value: Any) -> str:
    if name == "model_overrides":
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) if value else "none"
    return "none" if value is None else str(value)


def _flag(name: str) -> str:
    return "--set" if name == "model_overrides" else f"--{name}"


def reconcile(cfg: TrainConfig, stored: dict[str, Any], given: set[str], world_size: int,
              where: str) -> tuple[TrainConfig, dict[str, Any]]:
    """(the stored run's configuration plus the allowed changes the user gave, as a new
    TrainConfig; those changes {option: {"from", "to"}}); `cfg` is not modified. A given option
    that defines the run and differs from the stored value is a ConfigError listing every such
    difference."""
    diffs: list[str] = []
    changes: dict[str, Any] = {}
    flat = cfg.flatten()
    for name in [*fixed_options(), *MUTABLE, *GLOBAL_BATCH]:
        if name not in stored:
            continue  # a run written before the option existed keeps the current value
        old, new = stored[name], flat[name]
        if name not in given or _plain(new) == old:
            flat[name] = old if name != "model_overrides" else dict(old or {})
        elif name in MUTABLE or name in GLOBAL_BATCH:
            changes[name] = {"from": old, "to": _plain(new)}
        else:
            diffs.append(f"{_flag(name)} {_show(name, new)} (the run has {_show(name, old)})")
    stored_spec = stored.get("lang_data") or stored.get("lang_dataset")
    if stored_spec is not None:
        new_spec = flat["lang_data"] or flat["lang_dataset"]
        if set(LANGUAGE) & given and new_spec != stored_spec:
            diffs.append(f"--lang_dataset {new_spec} (the run has {stored_spec})")
        flat["lang_dataset"], flat["lang_data"] = stored.get("lang_dataset", flat["lang_dataset"]), stored.get("lang_data")
        if flat["lang_dataset"] == "auto" and not flat["lang_data"] and stored.get("language_source"):
            flat["lang_dataset"] = stored["language_source"]  # what auto chose then, whatever it would choose now
    step_tokens = flat["batch_size"] * flat["seq_len"] * flat["grad_accum"] * world_size
    if stored.get("tokens_per_step") not in (None, step_tokens):
        diffs.append(f"a global batch of {step_tokens} tokens per step (the run has {stored['tokens_per_step']}: "
                     f"--batch_size x --seq_len x --grad_accum x processes must stay the same)")
    if diffs:
        raise ConfigError(f"--resume: {where} was started with other values of options that define the run: "
                          f"{'; '.join(diffs)}; leave them out (the run's values are used) or start a new --output_dir")
    return TrainConfig.from_flat(flat), changes


@dataclasses.dataclass
class ResumeState:
    """What --resume found in the run folder: the stored config.json (if usable), the loaded
    last.pt (None when the run stopped before its first checkpoint), the configuration to
    continue with (stored run plus accepted changes, to be resolved), the accepted changes."""

    config: TrainConfig
    stored: dict[str, Any]
    ckpt: dict[str, Any] | None
    changes: dict[str, Any]
    notes: list[str]

    @classmethod
    def open(cls, cfg: TrainConfig, out: Path, given: set[str] | None, world_size: int) -> "ResumeState":
        """Read the run in `out` and reconcile `cfg` with it (see `reconcile`; `cfg` is not modified)."""
        stored, note = read_stored_config(out)
        notes: list[str] = []
        last = out / "last.pt"
        ckpt = load_checkpoint(last) if last.is_file() else None
        bad = _mistyped(stored) if stored is not None else None
        if bad is not None:
            note, stored = f"{out / 'config.json'} holds {bad}", None
            if ckpt is None:
                raise CheckpointError(f"--resume: {note} and there is no {last} to fall back on; repair or remove "
                                      f"the run folder")
        if stored is None:
            if ckpt is None:
                raise CheckpointError(f"--resume: no {str(last)} to resume from" +
                                      (f" and {note}" if note else " (and no config.json: no run was started there)"))
            if not isinstance(ckpt.get("train_config"), dict):
                raise CheckpointError(f"--resume: {note or 'no config.json'} and {last} holds no train_config")
            stored = _current_names(ckpt["train_config"])
            if (bad := _mistyped(stored)) is not None:
                raise CheckpointError(f"--resume: {note or 'no config.json'} and the train_config of {last} holds {bad}")
            notes.append(f"note: {note or 'no config.json'}; using the configuration stored in {last}")
        given = given_fields(cfg) if given is None else given
        config, changes = reconcile(cfg, stored, given, world_size, repr(str(out)))
        return cls(config, stored, ckpt, changes, notes)


def config_record(resolved: dict[str, Any], requested: dict[str, Any], resume: ResumeState | None,
                  step: int) -> dict[str, Any]:
    """config.json's content: the resolved configuration, the original arguments and the
    resume history (the stored history plus this resume, if any)."""
    if resume is None:
        return {**resolved, "arguments": _plain(requested), "history": []}
    stored = resume.stored
    arguments = stored.get("arguments") or {k: v for k, v in stored.items() if k in requested}
    entry = {"resumed_at_step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changed": resume.changes}
    if resume.ckpt is None:
        entry["restarted"] = True  # it had stopped before its first checkpoint
    return {**resolved, "arguments": arguments, "history": [*(stored.get("history") or []), entry]}


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """Name of the first parameter or buffer holding a NaN or infinity, else None."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


class Checkpointing:
    """Trainer mixin: save last.pt / best_model.pt and restore a run from last.pt."""

    def save(self, name: str) -> None:
        """Write checkpoint `name` (atomically) with everything --resume needs."""
        extra: dict[str, Any] = {}
        if getattr(self.tokenizer, "json", None):
            extra["tokenizer_json"] = self.tokenizer.json  # so evaluation rebuilds this very BPE
        if self.task_curriculum is not None:
            extra["curriculum"] = self.task_curriculum.state_dict()
        if self.corpus is not None:  # the resolved source: load_corpus(language["source"]) rebuilds it
            extra["language"] = self.language_info()
        save_checkpoint(self.out / name, self.model, self.tokenizer.name, **extra,
                        train_config=self.cfg.flatten(), step=self.step,
                        optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                        rng=self.rng_record(), scaler=self.scaler.state_dict(),
                        log_window={"acc": dict(self.log_acc), "n": self.log_n},
                        best_val=self.best_val, best_step=self.best_step,
                        wall_time_s=self.wall_before + time.time() - self.t0)

    def rng_record(self) -> dict[str, Any]:
        """RNG states for the checkpoint: this process's, plus every rank's under DDP ("ranks",
        gathered at the last validation) so each rank's dropout stream continues on resume."""
        rngs = [rng_state(self.device), *self.rank_rngs[1:]]  # rank 0's as of now (after validation)
        return {**rngs[0], "ranks": rngs}

    def check_weights_finite(self) -> None:
        """Refuse to validate or save weights holding NaN / inf (the last checkpoint stays)."""
        bad = first_nonfinite(self.model)
        if bad is not None:
            raise TrainingError(f"non-finite weights ({bad}) after step {self.step}; training stopped, "
                                f"{self.kept_checkpoint()}")

    def kept_checkpoint(self) -> str:
        """'last good checkpoint kept (...)' for the one-line messages of a stopped run."""
        if not (self.out / "last.pt").exists():
            return f"no checkpoint was written yet ({self.out}); --resume with a lower --lr starts it again"
        step = f", step {self.last_saved_step}," if self.last_saved_step is not None else ""
        return f"last good checkpoint kept (last.pt{step} in {self.out}); --resume with a lower --lr continues from it"

    def restore(self) -> None:
        """Continue from last.pt (model, optimizer, scheduler, scaler, RNG, log window, curriculum,
        step) with the hyperparameters of the current config; a run that stopped before its first
        checkpoint starts again from step 0. A damaged checkpoint is a one-line CheckpointError."""
        path = self.out / "last.pt"
        ckpt = self.resume_state.ckpt
        if ckpt is None:
            self.notices.append(f"note: {self.out} has no checkpoint yet (it stopped before its first save); "
                                f"starting it again from step 0")
        else:
            self._load_training_state(ckpt, path)
        if self.is_main:
            remove_stale_temps(self.out)  # left by a save that was killed before its rename
            append_metrics(self.out / "metrics.jsonl", {"kind": "resume", "step": self.step})

    def _load_training_state(self, ckpt: dict[str, Any], path: Path) -> None:
        where = f"--resume: {str(path)!r}"
        if ckpt["tokenizer"] != self.tokenizer.name:
            raise CheckpointError(f"--resume: run used tokenizer {ckpt['tokenizer']!r}, not {self.tokenizer.name!r}")
        if ckpt["model"]["variant"] != self.cfg.variant or ckpt["model"]["size"] != self.cfg.model_size:
            raise CheckpointError(f"--resume: {path} is a {ckpt['model']['size']} {ckpt['model']['variant']} run, "
                                  f"not {self.cfg.model_size} {self.cfg.variant}")
        check_fields(ckpt, where, {"step": int, "optimizer": dict, "optimizer.state": dict,
                                   "optimizer.param_groups": list, "scheduler": dict, "rng": dict,
                                   "rng.torch": torch.Tensor, "best_val": float})
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, ckpt["state_dict"], where)
        self._check_optimizer_shapes(ckpt["optimizer"], where)
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        fresh_base = list(getattr(self.scheduler, "base_lrs", []))
        try:
            self.model.load_state_dict(ckpt["state_dict"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            rngs = ckpt["rng"].get("ranks") or [ckpt["rng"]]
            if len(rngs) == self.world:
                set_rng_state(rngs[self.rank], self.device)
            else:  # another process count: data and weights continue exactly, dropout masks cannot
                torch.manual_seed(self.cfg.seed * 1_000_003 + ckpt["step"] * 1009 + self.rank)
                self.notices.append(f"note: resuming with {self.world} processes, the checkpoint was written by "
                                    f"{len(rngs)}; dropout masks continue from a fresh seed")
            window = ckpt.get("log_window") or {}
            self.log_acc, self.log_n = dict(window.get("acc", {})), int(window.get("n", 0))
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            detail = (str(exc).strip().splitlines() or [""])[0][:160]
            raise CheckpointError(f"{where} holds unusable training state ({type(exc).__name__}: {detail})") from None
        self._apply_current_hyperparameters(fresh_groups, fresh_base)
        saved = ckpt.get("curriculum")
        if (saved is None) != (self.task_curriculum is None):
            raise CheckpointError(f"--resume: the run was trained {'with' if saved else 'without'} "
                                  f"--use_task_curriculum; resume it the same way")
        if saved is not None:
            try:
                self.task_curriculum.load_state_dict(saved)
            except ConfigError as exc:
                raise CheckpointError(f"--resume: {exc}") from None
        best_val = float(ckpt["best_val"])
        self.step, self.best_val, self.best_step = ckpt["step"], best_val, ckpt.get("best_step")
        self.last_saved_step = self.step
        self.wall_before = float(ckpt.get("wall_time_s", 0.0))

    def _check_optimizer_shapes(self, saved: dict[str, Any], where: str) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        saved_ids = [i for g in saved["param_groups"] if isinstance(g, dict) for i in g.get("params", [])]
        if len(saved_ids) != len(params):
            raise CheckpointError(f"{where}: optimizer state covers {len(saved_ids)} parameters, the model has "
                                  f"{len(params)}")
        for i, p in zip(saved_ids, params):
            for key, t in (saved["state"].get(i) or {}).items():
                if isinstance(t, torch.Tensor) and t.dim() > 0 and tuple(t.shape) != tuple(p.shape):
                    raise CheckpointError(f"{where}: optimizer state {key!r} of parameter {i} has shape "
                                          f"{tuple(t.shape)}, the parameter {tuple(p.shape)}")

    def _apply_current_hyperparameters(self, fresh_groups: list[dict[str, Any]], fresh_base: list[float]) -> None:
        """After loading optimizer and scheduler state, put back the hyperparameters of the
        current configuration (loading restores the saved ones): a new --lr, --weight_decay or
        schedule takes effect at once; unchanged values give the very same numbers."""
        groups = self.optimizer.param_groups
        for g, fresh in zip(groups, fresh_groups):
            g.update({k: v for k, v in fresh.items() if k not in ("lr", "initial_lr")})
        lambdas = getattr(self.scheduler, "lr_lambdas", None)
        if not fresh_base or lambdas is None:
            return
        self.scheduler.base_lrs = fresh_base
        for g, base, lam in zip(groups, fresh_base, lambdas):
            g["initial_lr"] = base
            g["lr"] = base * lam(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in groups]

    def write_config(self, resolved: dict[str, Any]) -> None:
        """config.json (atomically): resolved settings, original arguments, resume history."""
        record = config_record(resolved, self.requested, self.resume_state, self.step)
        atomic_write_text(self.out / "config.json", json.dumps(record, indent=2) + "\n")

