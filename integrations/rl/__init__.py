"""Online reinforcement learning for the generator: DDPO, (Flow-)GRPO and DiffusionNFT, with any reward.

The algorithmic core, independent of run plumbing: the stochastic samplers with log-probabilities
(``StochasticSampler``), advantages computed over every process (``group_advantages``,
``PromptStatTracker``), the losses (``clipped_policy_loss``, ``gaussian_kl``, ``nft_loss``), one
policy update per batch of rollouts (``PolicyOptimizer``) and a minimal single-process loop
(``train_policy``). See ``docs/online_rl.md``.
"""

from .advantages import Advantages, PromptStatTracker, gather_objects, gather_rows, group_advantages
from .loop import PolicyRun, group_batch, train_policy
from .objectives import (
    clipped_policy_loss,
    forward_noised,
    gaussian_kl,
    nft_loss,
    optimality_probability,
    ratio_stats,
)
from .policy import METHODS, PolicyBatch, PolicyConfig, PolicyOptimizer
from .sampler import Rollout, StepOutput, StochasticSampler, policy_scheduler, sampler_kind
from .transitions import ddim_mean, ddim_std, flow_sde_mean, flow_sde_sigma, flow_sde_std, gaussian_log_prob

__all__ = [
    "Advantages", "PromptStatTracker", "gather_objects", "gather_rows", "group_advantages", "PolicyRun",
    "group_batch", "train_policy", "clipped_policy_loss", "forward_noised", "gaussian_kl", "nft_loss",
    "optimality_probability", "ratio_stats", "METHODS", "PolicyBatch", "PolicyConfig", "PolicyOptimizer",
    "Rollout", "StepOutput", "StochasticSampler", "policy_scheduler", "sampler_kind", "ddim_mean", "ddim_std",
    "flow_sde_mean", "flow_sde_sigma", "flow_sde_std", "gaussian_log_prob",
]
