"""What an IQA run trains (the fusion and the heads it is trained for, or a new LoRA adapter) and at what rate:
template heads' log temperatures may learn at their own."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

from torch import nn

from ..model import MSTCLIPIQA, adapter_names, add_adapter
from .config import TrainConfig

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


def select_trainable(model: MSTCLIPIQA, config: TrainConfig, outputs: Collection[str]) -> None:
    """Unfreeze what ``config`` trains: a new LoRA adapter (``lora_rank`` > 0), else every fusion and the heads of
    ``outputs``; a model that already carries adapters, or an ensemble under LoRA, is refused in one line."""
    if adapter_names(model) and not config.lora_rank:
        raise ValueError(f"the model carries adapters {adapter_names(model)}: train a new adapter on top "
                         "(lora_rank > 0), or merge them first with reward.training.merge_adapters")
    if config.lora_rank and model.config.ensemble > 1:
        raise ValueError(f"lora_rank={config.lora_rank}: an adapter adapts one fusion, and this model is an "
                         f"ensemble of {model.config.ensemble}; train it without LoRA")
    if config.lora_rank:
        add_adapter(model, config.adapter_name, config.lora_rank, config.lora_alpha, config.lora_dropout,
                    config.lora_encoders)
        return
    for fusion, heads in model.member_parts():
        fusion.requires_grad_(True)
        for name, head in heads.items():
            head.requires_grad_(name in outputs)
