"""One live run per run folder: an exclusive lock on its ``.lock`` file. The operating system's lock (``fcntl``,
``msvcrt``) ends with the process, however it ends; elsewhere a file created exclusively (``.lock.held``) is the
lock, and one a killed run left behind is named in the error."""
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


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._handle: IO[str] | None = None

    def _os_lock(self, handle: IO[str], take: bool) -> None:
        if fcntl is not None:
            fcntl.flock(handle, (fcntl.LOCK_EX | fcntl.LOCK_NB) if take else fcntl.LOCK_UN)
        elif msvcrt is not None:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK if take else msvcrt.LK_UNLCK, 1)
        elif take:
            os.close(os.open(self.directory / _HELD, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        else:
            (self.directory / _HELD).unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / LOCK_FILE, "a+")
        try:
            self._os_lock(handle, take=True)
        except OSError:  # BlockingIOError, PermissionError, FileExistsError
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            stale = "" if fcntl or msvcrt else f" (if no run is live there, remove {self.directory / _HELD})"
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
            self._os_lock(self._handle, take=False)
            self._handle.close()
            self._handle = None
