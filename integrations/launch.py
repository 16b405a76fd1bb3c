"""The fine-tuner's Accelerator: it joins the processes ``torchrun`` / ``accelerate launch`` started, on CPU too."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from reward.training import new_accelerator

from .tracking import check_trackers_installed, tracker_names

__all__ = ["launcher_world_size", "finetune_accelerator", "check_world_size"]


def launcher_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def finetune_accelerator(config: Any) -> Any:
    """An Accelerator for ``config`` (a ``RewardFinetuneConfig``).

    Without a GPU, accelerate joins a multi-process launch only when asked for the
    CPU; a bare ``Accelerator()`` would run every process as an independent
    single-process run. So on a machine without CUDA under a launcher, the
    CPU (gloo) backend is asked for explicitly.
    """
    names = tracker_names(config.log_with)
    check_trackers_installed(names)
    cpu = config.cpu or (launcher_world_size() > 1 and not torch.cuda.is_available())
    accelerator = new_accelerator(cpu=cpu, mixed_precision=config.mixed_precision,
                                  gradient_accumulation_steps=config.gradient_accumulation_steps,
                                  log_with=names or None, project_dir=config.output_dir)
    check_world_size(accelerator)
    return accelerator


def check_world_size(accelerator: Any) -> None:
    """Warn when a launcher started several processes but this one runs alone: each would train and write
    on its own."""
    world = launcher_world_size()
    if world > 1 and accelerator.num_processes == 1:
        warnings.warn(f"WORLD_SIZE={world} but this Accelerator runs as one process (rank "
                      f"{os.environ.get('RANK', '?')}): the {world} processes will train independently and write "
                      "into the same output folder. Build the Accelerator before any other accelerate state, with "
                      "cpu=True on a machine without a GPU, or let RewardFinetuner build it.",
                      RuntimeWarning, stacklevel=3)
