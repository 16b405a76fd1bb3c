"""Optimiser parameter groups: template heads' log temperatures may learn at their own rate."""
from __future__ import annotations

from typing import Any

from torch import nn

TEMPERATURE = "log_temperature"


def param_groups(model: nn.Module, lr: float, temperature_lr: float | None = None) -> list[dict[str, Any]]:
    """Trainable parameters in one group at ``lr``, or two: template heads' log temperatures at
    ``temperature_lr`` (without weight decay, which would pull the log towards tau = 1) and the rest at ``lr``.

    Each group keeps its peak rate under ``base_lr`` for the schedule.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    if temperature_lr is None:
        return [{"params": [p for _, p in params], "lr": lr, "base_lr": lr}]
    temperature = [p for n, p in params if n.rsplit(".", 1)[-1] == TEMPERATURE]
    rest = [p for n, p in params if n.rsplit(".", 1)[-1] != TEMPERATURE]
    groups = [{"params": rest, "lr": lr, "base_lr": lr}] if rest else []
    if temperature:
        groups.append({"params": temperature, "lr": temperature_lr, "base_lr": temperature_lr, "weight_decay": 0.0})
    return groups
