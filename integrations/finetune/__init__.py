"""Reward fine-tuning of a diffusion model's denoiser: the trainer, its config and methods table, its
checkpoints, log, trackers, EMA and prompt sources."""

from .base import DiffusionTrainer
from .checkpoints import complete_checkpoints
from .config import RewardFinetuneConfig
from .ema import LoraEMA
from .finetuner import RewardFinetuner
from .methods import METHODS
from .nonfinite import NonFiniteError
from .prompt_sources import PromptSource

__all__ = ["DiffusionTrainer", "complete_checkpoints", "RewardFinetuneConfig", "LoraEMA", "RewardFinetuner", "METHODS",
           "NonFiniteError", "PromptSource"]
