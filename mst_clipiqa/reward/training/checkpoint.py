"""The IQA trainer's per-epoch checkpoints, in the runtime's one format (:mod:`mst_clipiqa.runtime.checkpoints`):
``split_NN/checkpoints/step_<epoch>/``, the newest one kept.

Tensors: ``model.*`` (trained weights), ``best.*`` (weights of the best epoch so far), ``ema.*`` (the average of
the trained weights, when one is kept), ``optim.*`` (optimizer state); ``state.json`` records ``progress`` (epoch,
history, anything the trainer needs). A split folder written by an earlier release holds one file instead,
``checkpoint.safetensors`` (the same tensors and ``rng.*``, the JSON in its metadata): it still resumes, and the
next epoch's checkpoint replaces it.
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
    check_contents,
    read_checkpoint,
    resume_newest,
    step_folders,
    write_checkpoint,
)
from mst_clipiqa.runtime.state import capture_state, unflatten_optimizer_state

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


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _checkpoint(tensors: dict[str, torch.Tensor], optim: dict[str, Any], progress: dict[str, Any],
                rng: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> Checkpoint:
    def strip(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    return Checkpoint(strip("model"), strip("best"), unflatten_optimizer_state(tensors, optim), progress, rng,
                      strip("ema"))


def save_checkpoint(directory: str | Path, model_state: dict[str, torch.Tensor], best_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, progress: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None, accelerator: Any | None = None) -> Path:
    """Write the whole training state after epoch ``progress["epoch"]`` into ``directory`` (a split folder),
    replacing its earlier checkpoint. Collective: every process of ``accelerator`` (default: accelerate's
    process state) calls it."""
    acc = accelerator or PartialState()
    tensors = {**_prefixed("model", model_state), **_prefixed("best", best_state), **_prefixed("ema", ema_state or {})}
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


def _read(path: Path) -> Checkpoint:
    # the IQA trainer's processes draw alike (one seed per split): the main process's generators serve every one
    state = read_checkpoint(path, 0)
    check_contents(path, state, ["progress"], [])
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
    if path.is_file():
        return _read_legacy(path)
    if path.name.startswith("step_"):
        return _read(path)
    found = step_folders(path)
    if not found and (path / LEGACY_CHECKPOINT).is_file():
        return _read_legacy(path / LEGACY_CHECKPOINT)
    if not found:
        raise ValueError(f"{path} holds no checkpoint; expected a split folder with checkpoints/step_*/ (or an "
                         f"earlier release's {LEGACY_CHECKPOINT})")
    return resume_newest(found, _read, warn=warn)
