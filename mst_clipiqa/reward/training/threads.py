"""Intra-op threads for head training and evaluation on cached features.

A cached epoch is small matrix work (batch 8 through a 512-d fusion and heads):
more threads than one gain nothing there, and on a busy CPU they wait on each
other. ``benchmarks/bench_threads.py`` measured it side by side (see
docs/template-head.md). The encoders keep torch's own setting.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CACHED_THREADS = 1  # the policy on the CPU when ``threads`` is not given


@contextmanager
def head_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: 1 on the CPU, unchanged elsewhere)."""
    count = threads if threads is not None else CACHED_THREADS if device.type == "cpu" else None
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
