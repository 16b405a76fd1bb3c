"""Where each fine-tuning method keeps gradients in the shared denoising loop.

A method maps (config, batch size, generator) to ``(grad_from, stop_at)``: the
first step with gradients per trajectory, and the step whose predicted x0 is
decoded instead of finishing (None: finish). Add a method by adding an entry
to ``METHODS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .config import RewardFinetuneConfig

__all__ = ["METHODS", "GradientWindow"]

GradientWindow = Callable[[Any, int, torch.Generator], "tuple[torch.Tensor, int | None]"]


def draft(config: RewardFinetuneConfig, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, int | None]:
    """DRaFT-K: gradients through the last ``draft_k`` steps of every trajectory."""
    return torch.full((batch,), config.num_inference_steps - config.draft_k), None


def alignprop(config: RewardFinetuneConfig, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, int | None]:
    """AlignProp: per trajectory, the last K steps, K uniform in ``alignprop_k_range``."""
    steps = config.num_inference_steps
    low, high = config.alignprop_k_range or (1, steps)
    return steps - torch.randint(low, high + 1, (batch,), generator=rng), None


def refl(config: RewardFinetuneConfig, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, int | None]:
    """ReFL: one denoiser call with gradients at a random step among the last ``refl_window``."""
    steps = config.num_inference_steps
    stop = int(torch.randint(max(steps - config.refl_window, 0), steps, (1,), generator=rng))
    return torch.full((batch,), stop), stop


METHODS: dict[str, GradientWindow] = {"draft": draft, "alignprop": alignprop, "refl": refl}
