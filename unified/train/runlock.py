"""One writer per run folder: an advisory `fcntl.flock` on `<run>/.train.lock`, held by train.py
for its whole life (rank 0 under torchrun), so a second train.py aimed at the same folder stops
at once with the holder's pid instead of interleaving its metrics and checkpoints.

The lock file holds the holder's pid and host (for the message) and is removed when the holder
releases it. The kernel drops a flock when its process dies, so a SIGKILLed holder leaves at most
a stale file, which the next writer simply takes over. A lock obtained on a file that was
unlinked meanwhile (the holder released it between our open and our flock) is retried, so two
writers can never both believe they hold it. Where the file system has no flock support (some
network mounts) the run goes on with a note instead.
"""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from unified.errors import ConfigError

LOCK_NAME = ".train.lock"


class RunLock:
    """The advisory write lock of one run folder; `acquire()` raises a one-line ConfigError
    naming the holder when another process has it. Use as a context manager or call release()."""

    def __init__(self, folder: str | Path | None = None):
        self.path = Path(folder) / LOCK_NAME if folder is not None else None
        self.fd: int | None = None
        self.note: str | None = None  # set when the file system cannot lock

    def acquire(self, folder: str | Path | None = None) -> "RunLock":
        """Take the lock of `folder` (or the one given at construction), non-blocking, and write
        our pid into the lock file."""
        import fcntl

        if folder is not None:
            self.path = Path(folder) / LOCK_NAME
        assert self.path is not None, "RunLock.acquire needs a folder"
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise ConfigError(f"{str(self.path.parent)!r} is in use by another train.py ({holder}); wait for it "
                                  f"to finish or stop it, or choose another --output_dir") from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    self.note = (f"note: {str(self.path.parent)!r} cannot be locked on this file system "
                                 f"({exc.strerror}); make sure no other run writes into it")
                    return self
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and unlinked between our open and our flock: try again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            self.fd = fd
            return self
        raise ConfigError(f"could not lock {str(self.path)!r}: it keeps being replaced by another process")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking, so no one locks a doomed file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
