"""Who may work in a run folder, and what its files say about the run in it.

One live run per folder: the main process holds an exclusive ``flock`` on
``.lock`` for as long as the run works there, and only while holding it does it
read or write ``run.json``. The operating system drops the lock when the process
ends, however it ends, so a killed run never leaves a stale lock, and two starts
can never both proceed. ``run.json`` blocks a fresh start only when the folder
holds finished work (an epoch checkpoint, a finished split or a report): a run
that failed before its first epoch has nothing to lose.
"""
from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load_file

from ..utils import write_json

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
CHECKPOINT = "checkpoint.safetensors"
RESULT = "result.json"
BEST = "best.safetensors"
REPORT = "report.json"
SPLITS = "splits.json"  # the splits of the run (save_splits format), for evaluating the saved model


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(f"{self.directory} is in use by another run (process {holder}); wait for it to "
                             "finish, or choose another output directory") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a damaged file raises a ``ValueError`` that names it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object, found {type(data).__name__}")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in a safetensors file; a damaged file raises a ``ValueError`` that names it."""
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error})") from None


def finished_result(directory: Path) -> dict[str, Any] | None:
    """A finished split's ``result.json`` (None if the split is not finished), checked along with its
    ``best.safetensors``; either one damaged raises a ``ValueError`` naming it."""
    if not (directory / RESULT).exists():
        return None
    read_tensors(directory / BEST)
    return read_json(directory / RESULT)


def holds_finished_work(directory: Path) -> bool:
    """Whether anything in the folder took an epoch or more to make."""
    return (directory / REPORT).exists() or any(
        any(directory.glob(f"split_*/{name}")) for name in (CHECKPOINT, RESULT))


def claim_run_dir(directory: Path, settings: dict[str, Any], resume: bool) -> RunLock:
    """Lock the folder and record (or, on resume, check) the run's settings; returns the held lock.

    Raises ``ValueError`` if another run holds the folder, if it holds finished
    work and ``resume`` is off, or if resuming with other settings.
    """
    lock = RunLock(directory).acquire()
    try:
        _check_or_write(directory / RUN_FILE, json.loads(json.dumps(settings)), resume)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_or_write(path: Path, settings: dict[str, Any], resume: bool) -> None:
    if not path.exists():
        write_json(path, settings)
        return
    if not holds_finished_work(path.parent):
        try:
            same = read_json(path) == settings
        except ValueError:
            same = False
        if not same:
            warnings.warn(f"{path} is from a run that finished no epoch; starting afresh", stacklevel=2)
            write_json(path, settings)
        return
    if not resume:
        raise ValueError(f"{path.parent} already holds a run; pass resume=True (--resume) to continue it, "
                         "or choose a new output directory")
    try:
        saved = read_json(path)
    except ValueError as error:
        raise ValueError(f"cannot resume: {error}. It records the settings the finished epochs were trained "
                         "with; restore it, or start afresh in a new output directory") from None
    differing = sorted(k for k in settings if saved.get(k) != settings[k])
    if differing:
        raise ValueError(f"cannot resume {path.parent}: {differing} differ from the interrupted run; "
                         "expected the same model, data, splits and settings")
