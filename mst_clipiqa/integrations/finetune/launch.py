"""The fine-tuner's Accelerator: it joins the processes ``torchrun`` / ``accelerate launch`` started, on CPU too."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Any, TypeVar

from mst_clipiqa.runtime.processes import launcher_world_size, new_accelerator

from .config import TrainerConfig
from .tracking import check_trackers_installed, tracker_names

T = TypeVar("T", bound=TrainerConfig)

__all__ = ["finetune_accelerator", "check_world_size", "resolved_config"]


def finetune_accelerator(config: TrainerConfig) -> Any:
    """An Accelerator for ``config`` (a ``RewardFinetuneConfig``); under a launcher without CUDA it runs on the
    CPU (gloo) backend, as ``mst_clipiqa.runtime.processes.new_accelerator`` arranges."""
    names = tracker_names(config.run.log_with)
    check_trackers_installed(names)
    return new_accelerator(cpu=config.run.cpu, mixed_precision=config.run.mixed_precision,
                           gradient_accumulation_steps=config.run.gradient_accumulation_steps,
                           log_with=names or None, project_dir=config.run.output_dir)


def check_world_size(accelerator: Any) -> None:
    """Warn when a launcher started several processes but a user-built Accelerator runs alone: each process
    would train and write on its own."""
    world = launcher_world_size()
    if world > 1 and accelerator.num_processes == 1:
        warnings.warn(f"WORLD_SIZE={world} but this Accelerator runs as one process (rank "
                      f"{os.environ.get('RANK', '?')}): the {world} processes will train independently and write "
                      "into the same output folder. Build the Accelerator before any other accelerate state, with "
                      "cpu=True on a machine without a GPU, or let RewardFinetuner build it.",
                      RuntimeWarning, stacklevel=3)


def resolved_config(config: T, accelerator: Any) -> T:
    """``config`` with the precision ``accelerator`` runs (the launcher's, when the config left it at None), so
    that what is logged and checkpointed is what ran. A precision the config names that the Accelerator does not
    run is an error."""
    used, asked = accelerator.mixed_precision, config.run.mixed_precision
    if asked not in (None, used):
        raise ValueError(f"mixed_precision={asked!r} in the config, but the Accelerator passed in runs "
                         f"mixed_precision={used!r}; leave the config's at None (it then follows the Accelerator) "
                         "or build the Accelerator with the same precision")
    return replace(config, run=replace(config.run, mixed_precision=used))
