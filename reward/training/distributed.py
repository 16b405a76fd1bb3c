"""Processes under a launcher (torchrun, accelerate launch): one Accelerator per run, what the main process
alone does, each process's share of an epoch, and predictions gathered from every process."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list

T = TypeVar("T")


class MainProcessFailed(ValueError):
    """Raised on the other processes when what the main process does alone (see :func:`on_main`) failed."""


def launcher_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launcher_rank() -> int:
    """This process's rank among the launcher's processes (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def new_accelerator(**settings: Any) -> Accelerator:
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


def epoch_batches(indices: Sequence[int], batch_size: int, seed: int, split_index: int, epoch: int,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's batches for one epoch; the order depends only on (seed, split, epoch).

    Under DDP every process gets the same number of batches (the last ones
    wrap around to the first), as gradient averaging requires.
    """
    order = np.random.default_rng([seed, split_index, epoch]).permutation(np.asarray(indices, dtype=np.int64))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if world > 1:  # cycle, so that even fewer batches than processes give every process one
        batches = [batches[i % len(batches)] for i in range(-(-len(batches) // world) * world)]
    return batches[rank::world]


def gather_rows(accelerator: Accelerator, n: int,
                compute: Callable[[list[int]], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute(positions)`` on this process's block of ``range(n)``, gathered in order on every process.

    The last block is padded with repeats of position ``n - 1`` so that every
    process sends as many rows; the padding is cut off after gathering.
    """
    if accelerator.num_processes == 1:
        return compute(list(range(n)))
    share = -(-n // accelerator.num_processes)
    start = accelerator.process_index * share
    local = compute([min(p, n - 1) for p in range(start, start + share)])
    gathered = {k: accelerator.gather(torch.as_tensor(v, device=accelerator.device)) for k, v in local.items()}
    return {k: v[:n].cpu().numpy() for k, v in gathered.items()}
