"""An exponential moving average of the LoRA weights (diffusers' ``EMAModel``), swapped in for evaluation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["LoraEMA"]


class LoraEMA:
    """EMA of ``params``, updated once per optimizer step.

    diffusers' decay schedule: step n uses ``min(decay, (1 + n) / (10 + n))`` (n
    counted from 0, so the first update copies the weights), i.e. the average
    spans a few steps early on and ~``1 / (1 - decay)`` steps later.
    """

    def __init__(self, params: Sequence[nn.Parameter], decay: float):
        from diffusers.training_utils import EMAModel

        self.params = list(params)
        self.model = EMAModel(self.params, decay=decay)

    def step(self) -> None:
        self.model.step(self.params)

    @property
    def weights(self) -> list[torch.Tensor]:
        return list(self.model.shadow_params)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the parameters hold the averaged weights; the trained ones come back after."""
        self.model.store(self.params)
        self.model.copy_to(self.params)
        try:
            yield
        finally:
            self.model.restore(self.params)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON settings) for a checkpoint."""
        settings = self.model.state_dict()
        shadow = settings.pop("shadow_params")
        return {f"ema.{i}": t for i, t in enumerate(shadow)}, settings

    def load_state(self, tensors: dict[str, torch.Tensor], settings: dict[str, Any]) -> None:
        shadow = [tensors[f"ema.{i}"].to(p.device) for i, p in enumerate(self.params)]
        self.model.load_state_dict({**settings, "shadow_params": shadow})
