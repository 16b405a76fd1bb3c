"""Preference optimisation from a reward, and a reward-hacking monitor for any trainer.

* ``preference_pairs`` / ``load_pairs``: N seeded samples per prompt, scored by any reward, paired and
  written as a Diffusion-DPO data set (parquet shards, resumable, split over processes).
* ``DiffusionDPOObjective`` / ``dpo_loss`` / ``train_dpo``: Diffusion-DPO on LoRA for UNet and flow families.
* ``HackingMonitor``: held-out scorers and sample diversity every N steps, early stop, best state kept.
"""

from .dpo import (
    BETA_DIFFUSERS,
    BETA_SD15,
    DiffusionDPOObjective,
    DPOConfig,
    dpo_loss,
    image_latents,
    pair_batch,
    train_dpo,
)
from .monitor import HackingMonitor, Sampler, diversity, image_features, pipeline_sampler
from .pairs import PAIR_RULES, PairsWritten, load_pairs, preference_pairs, select_pairs, shard_path

__all__ = ["BETA_DIFFUSERS", "BETA_SD15", "DiffusionDPOObjective", "DPOConfig", "dpo_loss", "image_latents",
           "pair_batch", "train_dpo", "HackingMonitor", "Sampler", "diversity", "image_features", "pipeline_sampler",
           "PAIR_RULES", "PairsWritten", "load_pairs", "preference_pairs", "select_pairs", "shard_path"]
