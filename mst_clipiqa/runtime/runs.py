"""One live run per run folder: filelock's exclusive lock on its ``.lock`` file. The operating system's lock ends
with the process, however it ends; where there is none (no ``fcntl``), filelock's soft lock is the file itself,
created exclusively, and one a killed run left behind is named in the error."""
from __future__ import annotations

from pathlib import Path

from filelock import FileLock, SoftFileLock, Timeout

__all__ = ["RunLock"]


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._lock = FileLock(self.directory / ".lock", timeout=0)

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            stale = isinstance(self._lock, SoftFileLock)
            raise ValueError(f"{self.directory} is in use by another run; wait for it to finish, or choose another "
                             "output directory" + (f" (if no run is live there, remove {self._lock.lock_file})"
                                                   if stale else "")) from None
        return self

    def release(self) -> None:
        self._lock.release()
