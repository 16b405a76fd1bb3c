"""An IQA run folder: ``run.json`` (the settings, checked on resume), and per split its newest epoch's checkpoint in
the runtime's format (``split_NN/checkpoints/step_<epoch>/``: ``model.*``, ``best.*`` the best epoch's, ``ema.*``
their average when kept, ``optim.*``; ``progress`` in ``state.json``), then ``result.json`` and ``best.safetensors``.
The main process reads or writes ``run.json`` only while it holds the folder's lock (``runtime.runs.RunLock``)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from mst_clipiqa.runtime.checkpoints import (
    CHECKPOINTS,
    TrainingState,
    capture_state,
    check_same_run,
    read_checkpoint,
    resume_newest,
    step_folders,
    write_checkpoint,
)

from ..utils import read_json, read_tensors, write_json
from .config import RESUME_FREE, TrainConfig

__all__ = ["BEST", "REPORT", "RESULT", "SPLITS", "Checkpoint", "check_run_settings", "finished_result",
           "load_checkpoint", "remove_checkpoints", "save_checkpoint"]

RESULT = "result.json"
BEST = "best.safetensors"
REPORT = "report.json"
SPLITS = "splits.json"  # the splits of the run (save_splits format), for evaluating the saved model


class Checkpoint(TrainingState):
    """What :func:`load_checkpoint` returns: one epoch's state (``restore(optimizer)`` puts back the optimizer's
    state; ``meta["progress"]`` the epochs done)."""

    def part(self, name: str) -> dict[str, torch.Tensor]:
        """The ``model``, ``best`` or ``ema`` tensors, by parameter name."""
        return {k.removeprefix(name + "."): v for k, v in self.tensors.items() if k.startswith(name + ".")}


def save_checkpoint(directory: str | Path, model_state: dict[str, torch.Tensor], best_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, progress: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None, accelerator: Any | None = None) -> Path:
    """Write the training state after epoch ``progress["epoch"]`` into the split folder ``directory``, replacing
    its earlier checkpoint. Collective: every process of ``accelerator`` (default: accelerate's) calls it."""
    parts = {"model": model_state, "best": best_state, "ema": ema_state or {}}
    tensors = {f"{p}.{k}": v for p, state in parts.items() for k, v in state.items()}
    state = capture_state(tensors, {"step": progress["epoch"], "progress": progress}, optimizer)
    return write_checkpoint(accelerator or PartialState(), directory, state, keep=1)


def remove_checkpoints(directory: str | Path, accelerator: Any) -> None:
    """Delete a split folder's checkpoints; collective: every process has read them before the main one deletes."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(Path(directory) / CHECKPOINTS, ignore_errors=True)
    accelerator.wait_for_everyone()


def _read(path: Path) -> Checkpoint:
    return Checkpoint(**vars(read_checkpoint(path, ["progress"])))


def load_checkpoint(path: str | Path, warn: bool = True) -> Checkpoint:
    """The checkpoint at ``path``: one ``step_*`` folder, or a split folder's newest usable one (a damaged one is
    named in a warning, ``warn``, and an older one tried). A ``ValueError`` names what is missing or damaged."""
    path = Path(path)
    found = [path] if path.name.startswith("step_") else step_folders(path)
    if not found:
        raise ValueError(f"{path} holds no checkpoint of this release; expected a split folder with {CHECKPOINTS}/"
                         "step_*/ (an earlier release's checkpoint.safetensors is not read)")
    return resume_newest(found, _read, warn=warn)


def finished_result(directory: Path) -> dict[str, Any] | None:
    """A finished split's ``result.json`` (None if unfinished); it or ``best.safetensors`` damaged: a ``ValueError``."""
    if not (directory / RESULT).exists():
        return None
    read_tensors(directory / BEST, "the best epoch's weights of a finished split")
    return read_json(directory / RESULT)


def check_run_settings(directory: Path, settings: dict[str, Any], resume: bool) -> None:
    """Record the run's settings in ``run.json``; when the folder holds finished work, a ``ValueError`` unless
    ``resume`` and the same settings (an option newer than the file counts as at its default)."""
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
        if path.exists() and saved != settings:  # a run that finished no epoch has nothing to lose
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
