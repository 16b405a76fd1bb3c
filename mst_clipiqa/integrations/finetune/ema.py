"""The fine-tuners' EMA of the LoRA weights: the runtime's :class:`~mst_clipiqa.runtime.ema.EMA` with diffusers'
warm-up of the decay, and its part of a fine-tuning checkpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mst_clipiqa.runtime.ema import EMA

__all__ = ["LoraEMA"]


class LoraEMA(EMA):
    """EMA of ``params``, updated once per optimizer step; step n (from 0) uses ``min(decay, (1 + n) / (10 + n))``
    (diffusers' EMAModel schedule: the first update copies the weights, the average spans a few steps early on and
    ~``1 / (1 - decay)`` steps later)."""

    def __init__(self, params: Sequence[nn.Parameter], decay: float):
        super().__init__({str(i): p for i, p in enumerate(params)}, decay, warmup=True)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON settings) for a checkpoint."""
        return {f"ema.{i}": t for i, t in self.state_dict().items()}, self.settings()

    def load_state(self, tensors: Mapping[str, torch.Tensor], settings: Mapping[str, Any]) -> None:
        """Put back :meth:`state` (``settings`` as diffusers' EMAModel wrote them too: ``optimization_step``)."""
        self.load_state_dict({i: tensors[f"ema.{i}"] for i in self.average}, settings["optimization_step"])
