"""What an IQA run folder's files say. The main process holds the folder's
:class:`~mst_clipiqa.runtime.runs.RunLock` while the run works there, and only then reads or writes ``run.json``,
which blocks a fresh start only when the folder holds finished work (a run that failed before its first epoch
has nothing to lose)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from mst_clipiqa.runtime.checkpoints import check_same_run, step_folders

from ..utils import read_json, read_tensors, write_json
from .config import RESUME_FREE, TrainConfig

__all__ = ["BEST", "REPORT", "RESULT", "SPLITS", "check_run_settings", "finished_result"]

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


def check_run_settings(directory: Path, settings: dict[str, Any], resume: bool) -> None:
    """Record the run's settings in ``run.json``, or, when the folder holds finished work, check them (an option
    newer than the file counts as its default): a ``ValueError`` unless ``resume`` and the same settings."""
    path, settings = directory / "run.json", json.loads(json.dumps(settings))
    if old := sorted(directory.glob("split_*/checkpoint.safetensors")):
        raise ValueError(f"{old[0]} is an earlier release's checkpoint, which this release does not resume; finish "
                         "the run with that release, or delete the file to train its split again")
    try:
        saved = read_json(path)
    except (OSError, ValueError) as error:
        saved = error
    if not (directory / REPORT).exists() and not any(
            (split / RESULT).exists() or step_folders(split) for split in directory.glob("split_*")):
        if path.exists() and saved != settings:
            warnings.warn(f"{path} is from a run that finished no epoch; starting afresh", stacklevel=2)
        write_json(path, settings)
        return
    if not resume:
        raise ValueError(f"{directory} already holds a run; pass resume=True (--resume) to continue it, "
                         "or choose a new output directory")
    if isinstance(saved, Exception):
        raise ValueError(f"cannot resume: {saved}. It records the settings the finished epochs were trained "
                         "with; restore it, or start afresh in a new output directory")
    if isinstance(saved.get("train"), dict):
        saved["train"] = {**{k: v for k, v in TrainConfig().to_dict().items() if k in settings["train"]},
                          **saved["train"]}
    check_same_run(path, (saved, settings), (None, {}), RESUME_FREE)
