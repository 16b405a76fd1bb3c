"""One exponential moving average of trained weights, for both trainers (evaluation, model selection, sample
grids and the saved weights use it): torch's ``get_ema_multi_avg_fn`` after every optimizer step; with ``warmup``
update n uses diffusers' ``min(decay, (1 + n) / (10 + n))``."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .sharding import copy_whole_

__all__ = ["EMA", "LoraEMA"]


class EMA:
    """EMA of ``params`` (named tensors, e.g. a model's trainable parameters), starting at their current values."""

    def __init__(self, params: Mapping[str, torch.Tensor], decay: float, warmup: bool = False):
        if not (0.0 <= decay <= 1.0 if warmup else 0.0 < decay < 1.0):
            raise ValueError(f"ema decay must be in {'[0, 1]' if warmup else '(0, 1)'}, got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.params = dict(params)
        self.average = {n: p.detach().clone() for n, p in self.params.items()}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return 0.0 if self.updates == 0 else min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def step(self) -> None:
        """One update of the average towards the current weights (call after each optimizer step)."""
        update = get_ema_multi_avg_fn(self.current_decay())
        update(list(self.average.values()), [p.detach() for p in self.params.values()], None)
        self.updates += 1

    @property
    def weights(self) -> list[torch.Tensor]:
        return list(self.average.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: v.clone() for n, v in self.average.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], updates: int | None = None) -> None:
        """Put back a :meth:`state_dict` (and, for the warm-up, how many updates it had)."""
        if set(state) != set(self.average):
            raise ValueError(f"ema state holds {sorted(state)[:5]}...; expected the trainable parameters "
                             f"{sorted(self.average)[:5]}...")
        for name, value in state.items():
            copy_whole_(self.average[name], value)
        if updates is not None:
            self.updates = int(updates)

    def settings(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "optimization_step": self.updates}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(``ema.*`` tensors, :meth:`settings`) for a checkpoint; ``optimization_step`` as diffusers' EMAModel."""
        return {f"ema.{n}": t for n, t in self.state_dict().items()}, self.settings()

    def load_state(self, tensors: Mapping[str, torch.Tensor], settings: Mapping[str, Any]) -> None:
        """Put back :meth:`state`."""
        self.load_state_dict({n: tensors[f"ema.{n}"] for n in self.average}, settings["optimization_step"])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The parameters hold the averaged weights inside the block, their own ones again after it."""
        own = {n: p.detach().clone() for n, p in self.params.items()}
        self._put(self.average)
        try:
            yield
        finally:
            self._put(own)

    @torch.no_grad()
    def _put(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, p in self.params.items():
            p.copy_(values[name])


class LoraEMA(EMA):
    """EMA of a LoRA's ``params`` with diffusers' warm-up (what the fine-tuners keep)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        super().__init__({str(i): p for i, p in enumerate(params)}, decay, warmup=True)
