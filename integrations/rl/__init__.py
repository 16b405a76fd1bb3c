"""Old home of the online RL core (DDPO, GRPO, DiffusionNFT); its modules now live where they belong:
the samplers with log-probabilities in :mod:`integrations.pipelines.stochastic` (transitions in
``pipelines.transitions``), advantages, objectives, ``PolicyOptimizer`` and ``train_policy`` in
:mod:`integrations.finetune`. Every name it exported still imports from here."""

from ..finetune.advantages import Advantages, PromptStatTracker, gather_objects, gather_rows, group_advantages
from ..finetune.objectives import (
    clipped_policy_loss,
    forward_noised,
    gaussian_kl,
    nft_loss,
    optimality_probability,
    ratio_stats,
)
from ..finetune.policy import METHODS, PolicyBatch, PolicyConfig, PolicyOptimizer
from ..finetune.policy_loop import PolicyRun, group_batch, train_policy
from ..pipelines.stochastic import Rollout, StepOutput, StochasticSampler, policy_scheduler, sampler_kind
from ..pipelines.transitions import (
    ddim_mean,
    ddim_std,
    flow_sde_mean,
    flow_sde_sigma,
    flow_sde_std,
    gaussian_log_prob,
)

__all__ = [
    "Advantages", "PromptStatTracker", "gather_objects", "gather_rows", "group_advantages", "PolicyRun",
    "group_batch", "train_policy", "clipped_policy_loss", "forward_noised", "gaussian_kl", "nft_loss",
    "optimality_probability", "ratio_stats", "METHODS", "PolicyBatch", "PolicyConfig", "PolicyOptimizer",
    "Rollout", "StepOutput", "StochasticSampler", "policy_scheduler", "sampler_kind", "ddim_mean", "ddim_std",
    "flow_sde_mean", "flow_sde_sigma", "flow_sde_std", "gaussian_log_prob",
]
