"""User-facing errors.

Every mistake a user can make (unknown variant, missing file, bad checkpoint ...) raises a
subclass of `UnifiedError` whose message names what was wrong and what is accepted. The CLIs
catch `UnifiedError`, print its message on one line and exit with status 2.
"""
from __future__ import annotations

from typing import Iterable


class UnifiedError(Exception):
    """Base class of every error caused by user input rather than by a bug."""

    exit_code = 2


class UnknownNameError(UnifiedError, ValueError):
    """A name (variant, size, task, suite, option ...) that is not one of the accepted ones."""

    def __init__(self, kind: str, name: object, accepted: Iterable[object]):
        self.kind, self.name, self.accepted = kind, name, list(accepted)
        choices = ", ".join(str(a) for a in self.accepted)
        super().__init__(f"unknown {kind} {name!r}; accepted: {choices}")


class ConfigError(UnifiedError, ValueError):
    """An option value that is out of range or inconsistent with another option."""


class DataError(UnifiedError):
    """A data source that is missing, empty, unreadable or unreachable."""


class CheckpointError(UnifiedError):
    """A checkpoint that is missing, corrupt, or incompatible with the request."""


class TrainingError(UnifiedError):
    """Training could not continue (e.g. the loss became non-finite)."""


class WriteError(UnifiedError):
    """An output file could not be written (full disk, read-only file system ...); the previous
    version of the file is intact."""


def require(condition: bool, message: str, error: type[UnifiedError] = ConfigError) -> None:
    """Raise `error(message)` unless `condition` holds; keeps argument checks one line each."""
    if not condition:
        raise error(message)
