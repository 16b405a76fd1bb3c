"""Who may work in an IQA run folder, and what its files say: the main process holds the folder's
:class:`~mst_clipiqa.runtime.runs.RunLock` while the run works there, and only then reads or writes ``run.json``,
which blocks a fresh start only when the folder holds finished work (a run that failed before its first epoch
has nothing to lose)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from mst_clipiqa.runtime.checkpoints import check_same_run
from mst_clipiqa.runtime.runs import RunLock

from ..utils import read_json, read_tensors, write_json
from .checkpoint import holds_checkpoint
from .config import RESUME_FREE

__all__ = ["BEST", "REPORT", "RESULT", "RUN_FILE", "SPLITS", "claim_run_dir", "finished_result",
           "holds_finished_work"]

RUN_FILE = "run.json"
RESULT = "result.json"
BEST = "best.safetensors"
REPORT = "report.json"
SPLITS = "splits.json"  # the splits of the run (save_splits format), for evaluating the saved model


def finished_result(directory: Path) -> dict[str, Any] | None:
    """A finished split's ``result.json`` (None if the split is not finished), checked along with its
    ``best.safetensors``; either one damaged raises a ``ValueError`` naming it."""
    if not (directory / RESULT).exists():
        return None
    read_tensors(directory / BEST, "the best epoch's weights of a finished split")
    return read_json(directory / RESULT)


def holds_finished_work(directory: Path) -> bool:
    """Whether anything in the folder took an epoch or more to make."""
    return (directory / REPORT).exists() or any(
        (split / RESULT).exists() or holds_checkpoint(split) for split in directory.glob("split_*"))


def claim_run_dir(directory: Path, settings: dict[str, Any], resume: bool,
                  implied: dict[str, dict[str, Any]] | None = None) -> RunLock:
    """Lock the folder and record (or, on resume, check) the run's settings; returns the held lock. A
    ``ValueError`` if another run holds it, if it holds finished work and ``resume`` is off, or if resuming with
    other settings. ``implied``: per group of settings, what a folder written before a setting existed stands for
    (its default), so that a new option at its default leaves older runs resumable."""
    lock = RunLock(directory).acquire()
    try:
        _check_or_write(directory / RUN_FILE, json.loads(json.dumps(settings)), resume,
                        json.loads(json.dumps(implied or {})))
    except BaseException:
        lock.release()
        raise
    return lock


def _check_or_write(path: Path, settings: dict[str, Any], resume: bool, implied: dict[str, dict[str, Any]]) -> None:
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
    for group, values in implied.items():
        if isinstance(saved.get(group), dict) and isinstance(settings.get(group), dict):
            saved[group] = {**{k: v for k, v in values.items() if k in settings[group]}, **saved[group]}
    check_same_run(path, (saved, settings), (None, {}), RESUME_FREE)
