"""The IQA trainer's per-epoch checkpoints in the runtime's format (:mod:`mst_clipiqa.runtime.checkpoints`):
``split_NN/checkpoints/step_<epoch>/``, the newest kept. Tensors: ``model.*`` (trained weights), ``best.*`` (the best
epoch's), ``ema.*`` (their average, when kept), ``optim.*``; ``state.json`` records ``progress``."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from mst_clipiqa.runtime.checkpoints import (
    CHECKPOINTS,
    TrainingState,
    capture_state,
    read_checkpoint,
    resume_newest,
    step_folders,
    write_checkpoint,
)

__all__ = ["Checkpoint", "load_checkpoint", "remove_checkpoints", "save_checkpoint"]


class Checkpoint(TrainingState):
    """What :func:`load_checkpoint` returns: one epoch's state (``restore(optimizer)`` puts back the optimizer's
    state and the generators; ``meta["progress"]`` the epochs done)."""

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
    return write_checkpoint(accelerator or PartialState(), directory, progress["epoch"], state, keep=1)


def remove_checkpoints(directory: str | Path, accelerator: Any) -> None:
    """Delete a split folder's checkpoints (a finished split's, or damaged ones a fresh start replaces).
    Collective: every process has looked at them before the main process deletes them."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(Path(directory) / CHECKPOINTS, ignore_errors=True)
    accelerator.wait_for_everyone()


def _read(path: Path) -> Checkpoint:
    # the IQA trainer's processes draw alike (one seed per split): the main process's generators serve every one
    state = read_checkpoint(path, 0)
    state.require(path, ["progress"], [])
    return Checkpoint(**vars(state))


def load_checkpoint(path: str | Path, warn: bool = True) -> Checkpoint:
    """The checkpoint at ``path``: one ``step_*`` folder, or a split folder's newest usable one (a damaged one is
    named in a warning, ``warn``, and an older one tried). A ``ValueError`` names what is missing or damaged."""
    path = Path(path)
    if path.name.startswith("step_"):
        return _read(path)
    found = step_folders(path)
    if not found:
        raise ValueError(f"{path} holds no checkpoint of this release; expected a split folder with {CHECKPOINTS}/"
                         "step_*/ (an earlier release's checkpoint.safetensors is not read)")
    return resume_newest(found, _read, warn=warn)
