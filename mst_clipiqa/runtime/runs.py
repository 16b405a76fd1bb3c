"""One live run per run folder: an exclusive lock on its ``.lock`` file, shared by every trainer.

Where the operating system locks files (``fcntl`` on POSIX, ``msvcrt`` on
Windows) it drops the lock when the process ends, however it ends, so a killed
run never leaves a stale lock and two starts can never both proceed. Elsewhere
the lock is a file created exclusively beside it (``.lock.held``), removed on
release; a killed run leaves it behind, and the error says to remove it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None
try:
    import msvcrt
except ImportError:  # not Windows
    msvcrt = None

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = ".lock"
_HELD = ".lock.held"


def _lock(handle: IO[str], held: Path) -> bool:
    """Take the lock for ``handle``'s file; False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            os.close(os.open(held, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:  # BlockingIOError, PermissionError, FileExistsError
        return False
    return True


def _unlock(handle: IO[str], held: Path) -> None:
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
    elif msvcrt is not None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        held.unlink(missing_ok=True)


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / LOCK_FILE, "a+")
        held = self.directory / _HELD
        if not _lock(handle, held):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            stale = "" if fcntl or msvcrt else f" (if no run is live there, remove {held})"
            raise ValueError(f"{self.directory} is in use by another run (process {holder}); wait for it to "
                             f"finish, or choose another output directory{stale}") from None
        handle.seek(0)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            _unlock(self._handle, self.directory / _HELD)
            self._handle.close()
            self._handle = None
