"""A reward that returns every output by name, for fine-tuning against a model with several outputs."""
from __future__ import annotations

from torch import nn


class NamedScores(nn.Module):
    """Every output of the reward by name, so that each is logged and ``--reward-weights`` can weight it."""

    def __init__(self, reward: nn.Module):
        super().__init__()
        self.reward = reward

    def forward(self, images, prompts=None):
        return self.reward.named_scores(images, prompts)
