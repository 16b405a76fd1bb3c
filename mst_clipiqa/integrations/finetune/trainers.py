"""Which trainer runs each fine-tuning method: ``mst-clipiqa finetune --method M`` builds
``TRAINERS[M].config_class`` (``CONFIGS[M]``) from its flags and runs that trainer. A new trainer adds its
methods here."""

from __future__ import annotations

from .base import DiffusionTrainer
from .config import RunConfig
from .dpo import DPOTrainer
from .finetuner import RewardFinetuner
from .methods import METHODS
from .policy import METHODS as POLICY_METHODS
from .policy_gradient import PolicyTrainer

__all__ = ["CONFIGS", "TRAINERS"]

TRAINERS: dict[str, type[DiffusionTrainer]] = {
    **{method: RewardFinetuner for method in METHODS},
    **{method: PolicyTrainer for method in POLICY_METHODS},
    "dpo": DPOTrainer,
}
CONFIGS: dict[str, type[RunConfig]] = {method: trainer.config_class for method, trainer in TRAINERS.items()}
