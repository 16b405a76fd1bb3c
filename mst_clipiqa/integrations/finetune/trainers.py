"""Which trainer runs each fine-tuning method: ``mst-clipiqa finetune --method M`` builds ``CONFIGS[M]``
(``method_configs``, ``TRAINERS[M].config_class``) from its flags and runs that trainer. A new trainer adds its
methods here and in ``method_configs``."""

from __future__ import annotations

from .base import DiffusionTrainer
from .dpo import DPOTrainer
from .finetuner import RewardFinetuner
from .method_configs import CONFIGS
from .policy_gradient import PolicyTrainer

__all__ = ["CONFIGS", "TRAINERS"]

_BY_CONFIG = {trainer.config_class: trainer for trainer in (RewardFinetuner, PolicyTrainer, DPOTrainer)}
TRAINERS: dict[str, type[DiffusionTrainer]] = {method: _BY_CONFIG[config] for method, config in CONFIGS.items()}
