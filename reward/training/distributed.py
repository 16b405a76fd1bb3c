"""Processes under accelerate: one Accelerator per run, and each process's share of an epoch."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from accelerate import Accelerator
from accelerate.state import AcceleratorState


def new_accelerator(**settings: Any) -> Accelerator:
    """An ``Accelerator`` with these settings, even if another one in this process chose others.

    accelerate keeps one process-wide state and refuses new settings; the later
    trainer's settings win (the distributed setup itself is kept).
    """
    try:
        return Accelerator(**settings)
    except ValueError:
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(**settings)


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
