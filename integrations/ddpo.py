"""The DDPO reward-function contract users know from trl:
``reward_fn(images, prompts, prompt_metadata) -> (rewards, metadata)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .best_of_n import score_images
from .reward_functions import Rewards

__all__ = ["DDPORewardFn", "ddpo_reward_fn"]

DDPORewardFn = Callable[[torch.Tensor, Sequence[str], Sequence[Any]], tuple[torch.Tensor, dict[str, Any]]]


def ddpo_reward_fn(reward: Rewards, *, weights: Mapping[str, float] | None = None,
                   batch_size: int = 32) -> DDPORewardFn:
    """Wrap a reward for policy-gradient trainers (DDPO).

    The returned function takes images (B, 3, H, W) float in [0, 1] (as
    ``output_type="pt"`` gives them), one prompt per image and the prompts'
    metadata, and returns ``(rewards (B,), metadata)`` with ``metadata`` holding
    each named output. Policy gradients need no reward gradient, so it runs
    without autograd; for gradient-based fine-tuning use the reward itself.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def reward_fn(images: torch.Tensor, prompts: Sequence[str], prompt_metadata: Sequence[Any] | None = None
                  ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor in [0, 1], got {shape}")
        total, named = score_images(reward, images.float(), prompts, batch_size=batch_size, weights=weights,
                                    device=images.device)
        return total, named

    return reward_fn
