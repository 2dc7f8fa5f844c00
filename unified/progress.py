"""Progress bars for the phases that take more than a few seconds (evaluation grids, needle lengths,
comparison figures and samples, lm-eval requests): tqdm on stderr, shown only when stderr is a
terminal and the CLI was not given --quiet (`set_quiet`), so logs and pipes stay clean."""
from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every bar of this process off (a CLI's --quiet)."""
    global _quiet
    _quiet = bool(quiet)


def bars_enabled() -> bool:
    """Whether bars are shown: stderr is a terminal and --quiet was not given."""
    return not _quiet and sys.stderr.isatty()


def progress(iterable: Iterable[Any] | None = None, desc: str = "", total: int | None = None,
             disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total`) on stderr, off when `disable` or
    not `bars_enabled()`; it disappears when done (leave=False) so the CLI's own summary lines
    stay readable."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=disable or not bars_enabled(),
                leave=False, dynamic_ncols=True, mininterval=0.5, **kwargs)
