"""The DDPO reward-function contract users know from trl:
``reward_fn(images, prompts, prompt_metadata) -> (rewards, metadata)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .best_of_n import score_images
from .reward_functions import Rewards

__all__ = ["DDPORewardFn", "ddpo_reward_fn"]

DDPORewardFn = Callable[[Any, Sequence[str], Sequence[Any]], tuple[torch.Tensor, dict[str, Any]]]


def ddpo_reward_fn(reward: Rewards, *, weights: Mapping[str, float] | None = None,
                   batch_size: int = 32) -> DDPORewardFn:
    """Wrap a reward for policy-gradient trainers (DDPO).

    The returned function takes images, one prompt per image and the prompts' metadata, and
    returns ``(rewards (B,), metadata)`` with ``metadata`` holding each named output. Images
    may be what DDPO code passes: a float tensor in [0, 1] (``output_type="pt"``), a uint8
    tensor or numpy array (0..255), NCHW or NHWC, PIL images or a list of any of these; the
    layout and range follow the one rule of :mod:`reward.scoring.images`, so each form gives
    the same rewards. Policy gradients need no reward gradient, so it runs without autograd;
    for gradient-based fine-tuning use the reward itself.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def reward_fn(images: Any, prompts: Sequence[str], prompt_metadata: Sequence[Any] | None = None
                  ) -> tuple[torch.Tensor, dict[str, Any]]:
        return score_images(reward, images, prompts, batch_size=batch_size, weights=weights)

    return reward_fn
