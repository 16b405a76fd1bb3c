"""The fine-tuners' EMA of the LoRA weights: the runtime's :class:`~mst_clipiqa.runtime.ema.EMA` with diffusers'
warm-up of the decay."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mst_clipiqa.runtime.ema import EMA

__all__ = ["LoraEMA"]


class LoraEMA(EMA):
    """EMA of ``params``, updated once per optimizer step; step n (from 0) uses ``min(decay, (1 + n) / (10 + n))``
    (diffusers' EMAModel schedule: the first update copies the weights, the average spans a few steps early on and
    ~``1 / (1 - decay)`` steps later)."""

    def __init__(self, params: Sequence[nn.Parameter], decay: float):
        super().__init__({str(i): p for i, p in enumerate(params)}, decay, warmup=True)
