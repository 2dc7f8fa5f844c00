"""Checkpoints: written atomically, loaded with `torch.load(weights_only=True)`.

A checkpoint is a plain dict: {"format", "model": describe() dict, "state_dict", "tokenizer",
"train_config", "step", "optimizer", "scheduler", "rng", ...}. Configs are plain dicts so the
safe loader accepts them. State dicts are saved from the uncompiled module, so a checkpoint of a
`torch.compile`d model loads into an uncompiled one.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target
(`os.replace` is atomic on POSIX and Windows): a crash or SIGKILL at any moment leaves the
previous checkpoint or the new one, never a truncated file. A kill can leave an orphaned
`.<name>.*.tmp` file, which `remove_stale_temps` deletes when the run resumes.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from unified.errors import CheckpointError
from unified.model import LanguageModel, model_from_description

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


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace: a kill at any
    moment leaves either the old file or the new one, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """The checkpoint dict at `path`; missing, corrupt or foreign files raise CheckpointError."""
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
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | str = "cpu",
                          tokenizer_name: str | None = None) -> LanguageModel:
    """Rebuild the model of a loaded checkpoint; a different tokenizer is an error."""
    if tokenizer_name is not None and tokenizer_name != ckpt["tokenizer"]:
        raise CheckpointError(f"checkpoint was trained with tokenizer {ckpt['tokenizer']!r}, "
                              f"not {tokenizer_name!r}; use --tokenizer {ckpt['tokenizer']}")
    model = model_from_description(ckpt["model"], device="cpu")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the model they describe: {str(exc).splitlines()[0]}") from None
    return model.to(device)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (identifies the exact checkpoint in results metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
