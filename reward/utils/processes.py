"""Processes under a launcher (torchrun, accelerate launch): how many there are, one Accelerator per run, and
what the main process alone does. Shared by the IQA trainer and the diffusion fine-tuners."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list

__all__ = ["MainProcessFailed", "launcher_rank", "launcher_world_size", "new_accelerator", "on_main"]

T = TypeVar("T")


class MainProcessFailed(ValueError):
    """Raised on the other processes when what the main process does alone (see :func:`on_main`) failed."""


def launcher_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launcher_rank() -> int:
    """This process's rank among the launcher's processes (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def new_accelerator(**settings: object) -> Accelerator:
    """An ``Accelerator`` with these settings, even if another one in this process chose others.

    accelerate keeps one process-wide state and refuses new settings; the later
    trainer's settings win (the distributed setup itself is kept). Under a
    launcher on a machine without CUDA it runs on the CPU (gloo), since
    accelerate otherwise ignores the launcher there; a launcher whose processes
    still end up alone gets a warning.
    """
    world = launcher_world_size()
    if world > 1 and not torch.cuda.is_available():
        settings["cpu"] = True
    try:
        accelerator = Accelerator(**settings)
    except ValueError:
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(**settings)
    if world > 1 and accelerator.num_processes == 1:
        warnings.warn(f"WORLD_SIZE={world} but accelerate runs this as one process "
                      f"({accelerator.distributed_type}): each of the {world} processes does the whole job alone",
                      stacklevel=2)
    return accelerator


def on_main(accelerator: Accelerator, work: Callable[[], T]) -> T | None:
    """``work()`` on the main process alone; every process waits for it, and fails if it failed.

    Returns what ``work()`` returned on the main process and None on the
    others. A ``ValueError`` there becomes :class:`MainProcessFailed`
    elsewhere, with the same message.
    """
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = work()
        except Exception as caught:  # every process must hear of it, or the others wait forever
            error = caught
    if accelerator.num_processes > 1:
        outcome = [None if error is None else (isinstance(error, ValueError), f"{error}")]
        broadcast_object_list(outcome)
        if outcome[0] is not None and error is None:
            is_value_error, message = outcome[0]
            raise (MainProcessFailed if is_value_error else RuntimeError)(message)
    if error is not None:
        raise error
    return result
