"""Which trainer runs each fine-tuning method: ``TRAINERS[method]`` is the :class:`DiffusionTrainer` subclass
and ``CONFIGS[method]`` its settings dataclass (what ``mst-clipiqa finetune --method`` picks from)."""

from __future__ import annotations

from .config import RewardFinetuneConfig, RunConfig
from .dpo import DPOConfig, DPOTrainer
from .finetuner import RewardFinetuner
from .methods import METHODS

__all__ = ["TRAINERS", "CONFIGS"]

TRAINERS: dict[str, type] = {**dict.fromkeys(METHODS, RewardFinetuner), "dpo": DPOTrainer}
CONFIGS: dict[str, type[RunConfig]] = {**dict.fromkeys(METHODS, RewardFinetuneConfig), "dpo": DPOConfig}
