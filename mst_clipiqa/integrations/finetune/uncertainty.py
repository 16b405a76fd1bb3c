"""The reward's uncertainty in online RL (after GARDO, arXiv 2512.24138): which reward reports it, each
rollout's sigma, and per-sample KL weights."""
from __future__ import annotations

import warnings
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


class SigmaWatch:
    """Warns when the rollouts' mean sigma rises while their mean reward rises: the policy leaving the data the
    reward was trained on (the signature of reward hacking). Over the last ``window`` updates, the later half's
    mean is compared with the earlier half's: reward higher, and sigma higher by more than ``rise`` (a
    fraction). Its history travels in checkpoints (``state_dict``), so a resumed run warns where a straight
    one does."""

    def __init__(self, window: int = 6, rise: float = 0.1):
        if window < 2 or not rise >= 0:
            raise ValueError(f"window must be >= 2 and rise >= 0, got {window}, {rise}")
        self.window, self.rise = window, rise
        self.history: list[tuple[float, float]] = []

    def update(self, reward_mean: float, sigma_mean: float) -> bool:
        """Record one update's means; True (and a warning) when the signature shows over the window."""
        self.history = [*self.history, (float(reward_mean), float(sigma_mean))][-self.window:]
        if len(self.history) < self.window:
            return False
        half = self.window // 2
        early, late = self.history[:half], self.history[-half:]
        mean = (lambda rows, j: sum(r[j] for r in rows) / len(rows))
        rising = mean(late, 0) > mean(early, 0) and mean(late, 1) > (1 + self.rise) * mean(early, 1)
        if rising:
            warnings.warn(f"the rollouts' uncertainty rose from {mean(early, 1):.4g} to {mean(late, 1):.4g} while "
                          f"their reward rose from {mean(early, 0):.4g} to {mean(late, 0):.4g} over the last "
                          f"{self.window} updates: the policy may be leaving the reward's data (reward hacking); "
                          "check the samples, or raise kl_coeff", RuntimeWarning, stacklevel=3)
        return rising

    def state_dict(self) -> dict[str, list[list[float]]]:
        return {"history": [list(row) for row in self.history]}

    def load_state_dict(self, state: Mapping[str, list[list[float]]]) -> None:
        self.history = [(float(r), float(s)) for r, s in state.get("history", [])]
