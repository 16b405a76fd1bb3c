"""Fine-tuning of a diffusion model's denoiser with LoRA: the trainer base and its run plumbing (checkpoints, log,
trackers, EMA, prompt sources, the hacking monitor), reward backpropagation (``RewardFinetuner``: DRaFT-K,
AlignProp, ReFL), online RL (``PolicyTrainer``: DDPO, GRPO, DiffusionNFT, with its advantages, objectives and
``PolicyOptimizer``), Diffusion-DPO (``DPOTrainer``) and ``TRAINERS``, the trainer of each method."""

from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from ...runtime.checkpoints import complete_checkpoints
    from ...runtime.ema import LoraEMA
    from ...runtime.nonfinite import NonFiniteError
    from .advantages import Advantages, PromptStatTracker, gather_objects, gather_rows, group_advantages
    from .base import DiffusionTrainer
    from .config import RewardFinetuneConfig, RunConfig
    from .dpo import DPOConfig, DPOTrainer, train_dpo
    from .dpo_objective import BETA_DIFFUSERS, BETA_SD15, DiffusionDPOObjective, dpo_loss, image_latents, pair_batch
    from .finetuner import METHODS, RewardFinetuner
    from .monitor import HackingMonitor, Sampler, diversity, image_features, pipeline_sampler
    from .objectives import (
        clipped_policy_loss,
        forward_noised,
        gaussian_kl,
        nft_loss,
        optimality_probability,
        ratio_stats,
    )
    from .policy import METHODS as POLICY_METHODS
    from .policy import PolicyBatch, PolicyConfig, PolicyOptimizer
    from .policy_gradient import PolicyFinetuneConfig, PolicyTrainer
    from .policy_loop import group_batch, train_policy
    from .prompt_sources import PromptSource
    from .trainers import CONFIGS, TRAINERS

__all__ = ["DiffusionTrainer", "complete_checkpoints", "RewardFinetuneConfig", "RunConfig", "LoraEMA",
           "RewardFinetuner", "METHODS", "PromptSource", "DPOConfig", "DPOTrainer", "train_dpo", "BETA_DIFFUSERS",
           "BETA_SD15", "DiffusionDPOObjective", "dpo_loss", "image_latents", "pair_batch", "HackingMonitor",
           "Sampler", "diversity", "image_features", "pipeline_sampler", "Advantages", "PromptStatTracker",
           "gather_objects", "gather_rows", "group_advantages", "clipped_policy_loss", "forward_noised", "gaussian_kl",
           "nft_loss", "optimality_probability", "ratio_stats", "POLICY_METHODS", "PolicyBatch", "PolicyConfig",
           "PolicyOptimizer", "PolicyFinetuneConfig", "PolicyTrainer", "group_batch", "train_policy",
           "CONFIGS", "TRAINERS", "NonFiniteError"]

load_lazily(__name__)
