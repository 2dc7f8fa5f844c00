"""Checkpoints: written atomically, loaded with `torch.load(weights_only=True)`.

A checkpoint is a plain dict: {"format", "model": describe() dict, "state_dict", "tokenizer",
"train_config", "step", "optimizer", "scheduler", "rng", ...}. Configs are plain dicts so the
safe loader accepts them. State dicts are saved from the uncompiled module, so a checkpoint of a
`torch.compile`d model loads into an uncompiled one.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target
(`os.replace` is atomic on POSIX and Windows): a crash or SIGKILL at any moment leaves the
previous checkpoint or the new one, never a truncated file. A kill can leave an orphaned
`.<name>.*.tmp` file, which `remove_stale_temps` deletes when the run resumes. A write that fails
(full disk, read-only file system) is a one-line `WriteError`; the old file stays.

`ensure_writable_dir` proves an output folder accepts a file before any long work starts (every
CLI and the trainer call it first).

`load_checkpoint` checks the format fields and builds the declared model on the meta device to
compare its tensor shapes with the stored ones before anything is allocated, so a crafted file
fails with one line naming the field or tensor (and, with `weights_only=True`, runs no code).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from unified.errors import CheckpointError, ConfigError, UnifiedError, WriteError
from unified.models import LanguageModel, model_from_description

FORMAT = "unified-checkpoint-v1"


def unwrap(model: torch.nn.Module) -> LanguageModel:
    """The plain model inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            return model  # type: ignore[return-value]


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a fresh temporary file in `path`'s folder (unique name), fsync it, then
    os.replace it over `path`. A kill at any moment leaves the old file or the new one; a write
    that fails (full disk, read-only file system) removes the temporary file and raises a
    one-line WriteError, the old file untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        raise WriteError(f"could not write {str(path)!r} ({_reason(exc)}); {kept}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.rsplit(": ", 1)[-1][:120]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace: a kill at any
    moment leaves either the old file or the new one, never a truncated one."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file (config.json, summary.json ...) with the same all-or-nothing guarantee."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def ensure_writable_dir(path: str | Path, what: str = "output dir") -> Path:
    """Create `path` if needed and prove it accepts a file, before any long work is done; a path
    that cannot be written (under a regular file, read-only, no permission) is a ConfigError.
    (Permission bits do not stop root, so tests use a path below a regular file.)"""
    path = Path(path)
    probe = path / f".write_test.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not writable ({exc.strerror or type(exc).__name__})") from None
    return path


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files left by a save that was killed before its rename; returns them."""
    removed = []
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def rng_state(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The torch RNG states that training consumes (dropout): CPU, and the CUDA device's if used."""
    state = {"torch": torch.get_rng_state()}
    device = torch.device(device)
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
    """Restore states captured by `rng_state` (the CUDA one only on a CUDA device)."""
    torch.set_rng_state(state["torch"])
    device = torch.device(device)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: str | Path, model: torch.nn.Module, tokenizer_name: str, **fields: Any) -> None:
    """Save the model (unwrapped) with its description, tokenizer name and any extra fields."""
    m = unwrap(model)
    state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    atomic_save({"format": FORMAT, "model": m.describe(), "state_dict": state,
                 "tokenizer": tokenizer_name, **fields}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at `path`; a missing, corrupt or foreign file, one whose format fields
    are missing or mistyped, or whose weights do not have the shapes of the model it declares
    (built on the meta device, so nothing is allocated) raises CheckpointError naming the file
    and the field or tensor. `weights_only=True`: a crafted pickle cannot run code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} is corrupt or not a torch checkpoint "
                              f"({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not a unified checkpoint (expected format {FORMAT})")
    check_fields(ckpt, f"checkpoint {str(p)!r}", {
        "model": dict, "model.variant": str, "model.size": str, "model.config": dict, "state_dict": dict,
        "tokenizer": str})
    for name in ("model.options", "tokenizer_json", "train_config"):
        if _get(ckpt, name) is not None:
            check_fields(ckpt, f"checkpoint {str(p)!r}", {name: dict if name != "tokenizer_json" else str})
    bad = next((k for k, v in ckpt["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)),
               None)
    if bad is not None:
        raise CheckpointError(f"checkpoint {str(p)!r}: state_dict entry {bad!r} is not a named tensor")
    declared = _declared_model(ckpt, f"checkpoint {str(p)!r}")
    check_state_dict({k: tuple(v.shape) for k, v in declared.state_dict().items()}, ckpt["state_dict"],
                     f"checkpoint {str(p)!r}")
    return ckpt


_KINDS = {dict: "a dict", str: "a string", int: "an integer", float: "a number", list: "a list",
          torch.Tensor: "a tensor"}


def _get(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def check_fields(obj: dict[str, Any], where: str, fields: dict[str, type | tuple[type, ...]]) -> None:
    """Raise CheckpointError unless every dotted field exists with the given type; the message
    names the field, what it holds and what it should hold. (bool is not accepted as int.)"""
    for name, kind in fields.items():
        value = _get(obj, name)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            want = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
            got = "missing" if value is None else f"{type(value).__name__} {_short(value)}"
            raise CheckpointError(f"{where}: field {name!r} is {got}, expected {want}")


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, dict)):
        return f"of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_state_dict(expected: dict[str, tuple[int, ...]], stored: dict[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError unless `stored` holds exactly the tensors `expected` names, with
    those shapes; the message names the first missing, unexpected or wrongly shaped tensor."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    if missing or unexpected:
        what = f"lacks tensor {missing[0]!r}" if missing else f"has unexpected tensor {unexpected[0]!r}"
        extra = len(missing) + len(unexpected) - 1
        raise CheckpointError(f"{where} {what}{f' (and {extra} more differences)' if extra else ''}; "
                              f"its weights do not belong to the model it describes")
    for k, shape in expected.items():
        if tuple(stored[k].shape) != tuple(shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(stored[k].shape)}, the model needs "
                                  f"{tuple(shape)}")


def _declared_model(ckpt: dict[str, Any], where: str) -> LanguageModel:
    """The model a checkpoint describes, built on the meta device (no memory), its options
    type-checked: a crafted description (a string d_model, vocab_size 2**40 ...) fails here."""
    from unified.models.optioncheck import coerce_overrides

    desc = ckpt["model"]
    try:
        options = {**{k: v for k, v in desc["config"].items() if k not in ("variant", "size")},
                   **(desc.get("options") or {})}
        coerce_overrides(desc["variant"], options, flag="option")
        return model_from_description(desc, device="meta")
    except UnifiedError as exc:
        raise CheckpointError(f"{where} describes a model that cannot be built: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where} describes a model that cannot be built ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | str = "cpu",
                          tokenizer_name: str | None = None, where: str = "checkpoint") -> LanguageModel:
    """Rebuild the model of a loaded checkpoint; a different tokenizer is an error. The declared
    model is first built on the meta device and its tensor shapes compared with the stored
    weights, so a checkpoint never allocates more than the weights it holds."""
    if tokenizer_name is not None and tokenizer_name != ckpt["tokenizer"]:
        raise CheckpointError(f"checkpoint was trained with tokenizer {ckpt['tokenizer']!r}, "
                              f"not {tokenizer_name!r}; use --tokenizer {ckpt['tokenizer']}")
    declared = _declared_model(ckpt, where)
    check_state_dict({k: tuple(v.shape) for k, v in declared.state_dict().items()}, ckpt["state_dict"], where)
    model = model_from_description(ckpt["model"], device="cpu")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the model they describe: {str(exc).splitlines()[0]}") from None
    return model.to(device)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (identifies the exact checkpoint in results metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
