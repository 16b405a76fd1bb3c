"""Which trainer runs each fine-tuning method: ``mst-clipiqa finetune --method M`` builds
``TRAINERS[M].config_class`` from its flags and runs ``TRAINERS[M](pipe, reward, prompts, config)``.
A new trainer adds its methods here."""

from __future__ import annotations

from .base import DiffusionTrainer
from .finetuner import RewardFinetuner
from .methods import METHODS
from .policy import METHODS as POLICY_METHODS
from .policy_gradient import PolicyTrainer

__all__ = ["TRAINERS"]

TRAINERS: dict[str, type[DiffusionTrainer]] = {
    **{method: RewardFinetuner for method in METHODS},
    **{method: PolicyTrainer for method in POLICY_METHODS},
}
