"""One exponential moving average of trained weights, for both trainers (evaluation, model selection, sample
grids and the saved weights use it): torch's ``get_ema_multi_avg_fn`` after every optimizer step; with ``warmup``
update n uses diffusers' ``min(decay, (1 + n) / (10 + n))``."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .checkpoints import DamagedCheckpoint
from .sharding import copy_whole_

__all__ = ["EMA", "LoraEMA"]


class EMA:
    """EMA of ``params`` (named tensors, e.g. a model's trainable parameters), starting at their current values."""

    def __init__(self, params: Mapping[str, torch.Tensor], decay: float, warmup: bool = False):
        if not (0.0 <= decay <= 1.0 if warmup else 0.0 < decay < 1.0):
            raise ValueError(f"ema decay must be in {'[0, 1]' if warmup else '(0, 1)'}, got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.params = list(params.values())
        self.average = {n: p.detach().clone() for n, p in params.items()}

    @torch.no_grad()
    def step(self) -> None:
        """One update of the average towards the current weights (call after each optimizer step)."""
        decay, n = self.decay, self.updates
        if self.warmup:
            decay = min(decay, (1 + n) / (10 + n)) if n else 0.0
        get_ema_multi_avg_fn(decay)(list(self.average.values()), [p.detach() for p in self.params], None)
        self.updates += 1

    @property
    def weights(self) -> list[torch.Tensor]:
        """The averaged tensors, in the order of ``params``."""
        return list(self.average.values())

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The averaged tensors by name, and the update count as diffusers' EMAModel saved it, for a checkpoint."""
        return dict(self.average), {"optimization_step": self.updates}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> None:
        """Put back :meth:`state` (``tensors`` may hold other tensors too; without ``meta`` the count stays)."""
        if missing := [name for name in self.average if name not in tensors]:
            raise DamagedCheckpoint(f"the EMA state lacks {len(missing)} tensor(s), first: {missing[:3]}")
        for name, average in self.average.items():
            copy_whole_(average, tensors[name])
        if meta is not None:
            self.updates = int(meta["optimization_step"])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The parameters hold the averaged weights inside the block, their own ones again after it."""
        params = [p.detach() for p in self.params]
        own = [p.clone() for p in params]
        for p, average in zip(params, self.average.values()):
            p.copy_(average)
        try:
            yield
        finally:
            for p, value in zip(params, own):
                p.copy_(value)


class LoraEMA(EMA):
    """EMA of a LoRA's ``params`` with diffusers' warm-up, named ``ema.<i>`` as the fine-tuners' checkpoints hold it."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        super().__init__({f"ema.{i}": p for i, p in enumerate(params)}, decay, warmup=True)
