"""Device strings checked against what this torch build and machine have, before any work."""
from __future__ import annotations

import torch

from unified.errors import ConfigError

ACCEPTED = "cpu, cuda, cuda:N, mps"


def check_device(name: str, flag: str = "--device") -> torch.device:
    """`name` as a torch.device, or a one-line ConfigError saying why it cannot be used here:
    not a device string torch knows, a type other than cpu/cuda/mps, CUDA absent or the index
    beyond the visible GPUs, MPS absent. Checked up front so a bad value fails before loading."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{flag} {name!r} is not a device; accepted: {ACCEPTED}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {name!r}: CUDA is not available on this machine (torch {torch.__version__}); "
                              f"use {flag} cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{flag} {name!r}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{flag} {name!r}: MPS is not available on this machine; use {flag} cpu")
        return device
    raise ConfigError(f"{flag} {name!r}: device type {device.type!r} is not supported; accepted: {ACCEPTED}")
