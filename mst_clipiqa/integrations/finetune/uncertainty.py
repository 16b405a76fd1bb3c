"""The reward's uncertainty in online RL (after GARDO, arXiv 2512.24138): which reward reports it, each
rollout's sigma, and per-sample KL weights."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mst_clipiqa.reward import MSTCLIPIQAReward
from mst_clipiqa.reward.utils import UNIT, rescale

from ..rewards import NamedScores, Rewards


def uncertainty_reward(reward: Rewards) -> MSTCLIPIQAReward:
    """The reward whose sigma the options use: the reward itself (or the one ``NamedScores`` wraps), or the first
    such reward of a mapping."""
    candidates = reward.values() if isinstance(reward, Mapping) else [reward]
    for candidate in candidates:
        candidate = candidate.reward if isinstance(candidate, NamedScores) else candidate
        if isinstance(candidate, MSTCLIPIQAReward):
            return candidate
    raise ValueError("uncertainty needs a reward that reports how sure it is: an MSTCLIPIQAReward, alone or in the "
                     "mapping of rewards; got none (set uncertainty='none')")


@torch.no_grad()
def rollout_sigma(reward: MSTCLIPIQAReward, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """(B,) sigma of images in [0, 1] (a second pass of the reward; its encoders run again)."""
    images = images.float().to(reward.model.device)
    if tuple(reward.input_range) != UNIT:
        images = rescale(images, UNIT, reward.input_range)
    return reward(images, list(prompts), return_uncertainty=True).sigma.float()


def kl_weights(sigma: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The minibatch ``index``'s KL weights: sigma over the whole batch's mean sigma (1 on average)."""
    weights = sigma / sigma.mean().clamp_min(torch.finfo(sigma.dtype).tiny)
    return weights[index.to(weights.device)]
