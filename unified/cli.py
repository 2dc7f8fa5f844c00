"""What every CLI shares: one-line errors with exit status 2 (`run_cli`, `ArgumentParser`); the
`--set KEY=VALUE` parser is `unified.models.optioncheck.parse_overrides`. Only the CLI scripts
(train.py, eval_hub.py, compare.py, ladder.py, sample.py, bench/*.py and the packages' `__main__`
modules) import this module; the library never does (tests/test_layering.py). Failing fast when
offline is `unified.text.textcache.set_offline_if_unreachable`; the writable-output check is
`unified.train.checkpoint.ensure_writable_dir`.
"""
from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from typing import Callable

from unified.errors import UnifiedError


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see `run_cli`), so `finally`
    blocks run: temporary files are removed and the run folder's lock is released."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


# A full disk, a quota or a read-only file system during a write: one line, not a traceback.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a CLI main; a UnifiedError (or a full disk) becomes one line on stderr and exit
    status 2. SIGINT ends it with "interrupted" (130), SIGTERM with "terminated" (143), after
    the cleanup of whatever was running."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        code = main(argv)
    except UnifiedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"error: could not write{where} ({exc.strerror}); files written before are intact", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("terminated", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    finally:
        if previous is not None:  # (matters when a test calls run_cli in its own process)
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and usage errors as one line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
