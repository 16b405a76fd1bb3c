"""The IQA trainer's per-epoch checkpoints, in the runtime's one format (:mod:`mst_clipiqa.runtime.checkpoints`):
``split_NN/checkpoints/step_<epoch>/``, the newest one kept. Tensors: ``model.*`` (trained weights), ``best.*``
(the best epoch's), ``ema.*`` (their average, when kept), ``optim.*``; ``state.json`` records ``progress``.
An earlier release's split holds ``checkpoint.safetensors`` instead (the same tensors and ``rng.*``, the JSON in
its metadata): it still resumes, and the next epoch's checkpoint replaces it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from mst_clipiqa.runtime.checkpoints import (
    CHECKPOINTS,
    capture_state,
    read_checkpoint,
    resume_newest,
    step_folders,
    unflatten_optimizer_state,
    write_checkpoint,
)

from ..utils import read_tensors

__all__ = ["LEGACY_CHECKPOINT", "Checkpoint", "holds_checkpoint", "load_checkpoint", "remove_checkpoints",
           "save_checkpoint"]

LEGACY_CHECKPOINT = "checkpoint.safetensors"  # an earlier release's single file per split


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    progress: dict[str, Any]
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]]
    ema_state: dict[str, torch.Tensor]


def save_checkpoint(directory: str | Path, model_state: dict[str, torch.Tensor], best_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, progress: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None, accelerator: Any | None = None) -> Path:
    """Write the whole training state after epoch ``progress["epoch"]`` into ``directory`` (a split folder),
    replacing its earlier checkpoint. Collective: every process of ``accelerator`` (default: accelerate's
    process state) calls it."""
    acc = accelerator or PartialState()
    parts = {"model": model_state, "best": best_state, "ema": ema_state or {}}
    tensors = {f"{p}.{k}": v for p, state in parts.items() for k, v in state.items()}
    state = capture_state(tensors, {"step": progress["epoch"], "progress": progress}, optimizer)
    path = write_checkpoint(acc, directory, progress["epoch"], state, keep=1)
    if acc.is_main_process:
        (Path(directory) / LEGACY_CHECKPOINT).unlink(missing_ok=True)
    return path


def holds_checkpoint(directory: str | Path) -> bool:
    """Whether a split folder holds a checkpoint (usable or not), of this release or an earlier one."""
    return bool(step_folders(directory)) or (Path(directory) / LEGACY_CHECKPOINT).is_file()


def remove_checkpoints(directory: str | Path, accelerator: Any) -> None:
    """Delete a split folder's checkpoints (a finished split's, or damaged ones a fresh start replaces).
    Collective: every process has looked at them before the main process deletes them."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(Path(directory) / CHECKPOINTS, ignore_errors=True)
        (Path(directory) / LEGACY_CHECKPOINT).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def _checkpoint(tensors: dict[str, torch.Tensor], optim: dict[str, Any], progress: dict[str, Any],
                rng: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> Checkpoint:
    parts = {p: {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".")} for p in ("model", "best",
                                                                                                    "ema")}
    return Checkpoint(parts["model"], parts["best"], unflatten_optimizer_state(tensors, optim), progress, rng,
                      parts["ema"])


def _read(path: Path) -> Checkpoint:
    # the IQA trainer's processes draw alike (one seed per split): the main process's generators serve every one
    state = read_checkpoint(path, 0)
    state.require(path, ["progress"], [])
    return _checkpoint(state.tensors, state.meta["optimizer"], state.meta["progress"],
                         (state.rng_tensors, state.rng_meta))


def _read_legacy(path: Path) -> Checkpoint:
    tensors, metadata = read_tensors(path, "a checkpoint of the IQA trainer")
    missing = [k for k in ("progress", "optim", "rng") if k not in metadata]
    if missing:
        raise ValueError(f"checkpoint {path} lacks metadata {missing}; expected an IQA trainer's checkpoint")
    rng = ({k: v for k, v in tensors.items() if k.startswith("rng.")}, json.loads(metadata["rng"]))
    return _checkpoint(tensors, json.loads(metadata["optim"]), json.loads(metadata["progress"]), rng)


def load_checkpoint(path: str | Path, warn: bool = True) -> Checkpoint:
    """The checkpoint at ``path``: a split folder (its newest usable checkpoint: a damaged one is named in a
    warning, ``warn``, and an older one tried), one ``step_*`` folder, or an earlier release's
    ``checkpoint.safetensors``. A ``ValueError`` names what is missing or damaged."""
    path = Path(path)
    if path.name.startswith("step_") and not path.is_file():
        return _read(path)
    found = [] if path.is_file() else step_folders(path)
    if found:
        return resume_newest(found, _read, warn=warn)
    legacy = path if path.is_file() else path / LEGACY_CHECKPOINT
    if not legacy.is_file():
        raise ValueError(f"{path} holds no checkpoint; expected a split folder with checkpoints/step_*/ (or an "
                         f"earlier release's {LEGACY_CHECKPOINT})")
    return _read_legacy(legacy)
