"""The IQA trainer under a launcher: each process's share of an epoch, and predictions gathered from all."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from accelerate import Accelerator

__all__ = ["epoch_batches", "gather_rows"]


def epoch_batches(indices: Sequence[int], batch_size: int, seed: int, split_index: int, epoch: int,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's batches for one epoch, in an order that depends only on (seed, split, epoch); under DDP
    every process gets as many (the last ones wrap around to the first), as gradient averaging requires."""
    order = np.random.default_rng([seed, split_index, epoch]).permutation(np.asarray(indices, dtype=np.int64))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches = [batches[i % len(batches)] for i in range(-(-len(batches) // world) * world)]
    return batches[rank::world]


def gather_rows(accelerator: Accelerator, n: int,
                compute: Callable[[list[int]], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute(positions)`` on this process's block of ``range(n)``, gathered in order on every process (the
    last block padded with position ``n - 1``, so that every process sends as many rows, and cut after)."""
    if accelerator.num_processes == 1:
        return compute(list(range(n)))
    share = -(-n // accelerator.num_processes)
    start = accelerator.process_index * share
    local = compute([min(p, n - 1) for p in range(start, start + share)])
    gathered = {k: accelerator.gather(torch.as_tensor(v, device=accelerator.device)) for k, v in local.items()}
    return {k: v[:n].cpu().numpy() for k, v in gathered.items()}
