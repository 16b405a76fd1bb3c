"""An exponential moving average of the trained weights, for smoother model selection.

From a random fusion a head fits a few hundred samples quickly and its validation
curve jumps from epoch to epoch; the epoch picked on a small validation part is
then partly luck. The average of the weights over the last ``1 / (1 - decay)``
optimiser steps moves smoothly: it is what each epoch is validated with, what
selection keeps and what is saved. The update is torch's own
(``torch.optim.swa_utils.get_ema_multi_avg_fn``), applied after every step to the
trainable parameters only (frozen ones, the encoders, never change).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class WeightEMA:
    """EMA of a model's trainable parameters, keyed by parameter name; starts at the current weights."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.model = model
        self.update_fn = get_ema_multi_avg_fn(decay)
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.average = {n: p.detach().clone() for n, p in self.params.items()}

    def update(self) -> None:
        """One step of the average towards the current weights (call after each optimiser step)."""
        self.update_fn(list(self.average.values()), [p.detach() for p in self.params.values()], None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: v.clone() for n, v in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.average):
            raise ValueError(f"ema state holds {sorted(state)[:5]}...; expected the trainable parameters "
                             f"{sorted(self.average)[:5]}...")
        for name, value in state.items():
            self.average[name].copy_(value)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model carries the averaged weights inside the block, its own ones again after it."""
        own = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(own[name])
