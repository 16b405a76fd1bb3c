"""Where issue 22's preference code first lived; it now sits in the layout: the pairs in
``integrations.inference.preference_pairs``, Diffusion-DPO in ``integrations.finetune.dpo`` (trainer) and
``integrations.finetune.dpo_objective`` (loss), the hacking monitor in ``integrations.finetune.monitor``.
These names still import from here."""

from ..finetune.dpo import DPOConfig, train_dpo
from ..finetune.dpo_objective import (
    BETA_DIFFUSERS,
    BETA_SD15,
    DiffusionDPOObjective,
    dpo_loss,
    image_latents,
    pair_batch,
)
from ..finetune.monitor import HackingMonitor, Sampler, diversity, image_features, pipeline_sampler
from ..inference.preference_pairs import (
    PAIR_RULES,
    PairsWritten,
    load_pairs,
    preference_pairs,
    select_pairs,
    shard_path,
)

__all__ = ["BETA_DIFFUSERS", "BETA_SD15", "DiffusionDPOObjective", "DPOConfig", "dpo_loss", "image_latents",
           "pair_batch", "train_dpo", "HackingMonitor", "Sampler", "diversity", "image_features", "pipeline_sampler",
           "PAIR_RULES", "PairsWritten", "load_pairs", "preference_pairs", "select_pairs", "shard_path"]
