"""Fine-tuning of a diffusion model's denoiser: the trainer base and its run plumbing, reward fine-tuning
(DRaFT-K, AlignProp, ReFL), Diffusion-DPO, the hacking monitor, configs, checkpoints, log, trackers, EMA and
prompt sources."""

from .base import DiffusionTrainer
from .checkpoints import complete_checkpoints
from .config import RewardFinetuneConfig, RunConfig
from .dpo import DPOConfig, DPOTrainer, train_dpo
from .dpo_objective import BETA_DIFFUSERS, BETA_SD15, DiffusionDPOObjective, dpo_loss, image_latents, pair_batch
from .ema import LoraEMA
from .finetuner import RewardFinetuner
from .methods import METHODS
from .monitor import HackingMonitor, Sampler, diversity, image_features, pipeline_sampler
from .prompt_sources import PromptSource
from .trainers import CONFIGS, TRAINERS

__all__ = ["DiffusionTrainer", "complete_checkpoints", "RewardFinetuneConfig", "RunConfig", "LoraEMA",
           "RewardFinetuner", "METHODS", "PromptSource", "DPOConfig", "DPOTrainer", "train_dpo", "BETA_DIFFUSERS",
           "BETA_SD15", "DiffusionDPOObjective", "dpo_loss", "image_latents", "pair_batch", "HackingMonitor",
           "Sampler", "diversity", "image_features", "pipeline_sampler", "CONFIGS", "TRAINERS"]
