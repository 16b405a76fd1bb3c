"""The config of each fine-tuning method, without the trainers (no torch here): what ``mst-clipiqa finetune``
builds from its flags. ``trainers.TRAINERS`` gives the trainer of each method."""

from __future__ import annotations

from .config import METHODS, RewardFinetuneConfig
from .dpo_config import DPOConfig
from .policy_config import METHODS as POLICY_METHODS
from .policy_config import PolicyFinetuneConfig

__all__ = ["CONFIGS"]

CONFIGS: dict[str, type] = {**{method: RewardFinetuneConfig for method in METHODS},
                            **{method: PolicyFinetuneConfig for method in POLICY_METHODS}, "dpo": DPOConfig}
