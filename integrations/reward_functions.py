"""The reward protocol the adapters accept, and the weighted objective built from it.

A reward is any callable ``reward_fn(images, prompts) -> Tensor (B,)`` (or a
mapping of named (B,) tensors), images (B, 3, H, W) float in [0, 1]. A mapping
``{name: reward_fn}`` combines several. A reward whose ``lower_better``
attribute is true is negated, so the objective is always higher-is-better.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

__all__ = ["RewardFn", "Rewards", "named_rewards", "objective"]

RewardFn = Callable[[torch.Tensor, Sequence[str] | None], torch.Tensor | Mapping[str, torch.Tensor]]
Rewards = RewardFn | Mapping[str, RewardFn]


def _check(name: str, value: object, batch: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.shape != (batch,) or not value.is_floating_point():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"reward {name!r} returned {shape}; expected a float tensor of shape ({batch},), "
                         "one reward per image")
    return value


def _call(name: str, fn: RewardFn, images: torch.Tensor, prompts: Sequence[str] | None) -> dict[str, torch.Tensor]:
    sign = -1.0 if getattr(fn, "lower_better", False) else 1.0
    out = fn(images, prompts)
    if isinstance(out, Mapping):
        return {f"{name}.{key}" if name else key: sign * _check(key, v, len(images)) for key, v in out.items()}
    return {name or "reward": sign * _check(name or "reward", out, len(images))}


def named_rewards(rewards: Rewards, images: torch.Tensor, prompts: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Every named (B,) output, each higher-is-better, gradients intact."""
    if isinstance(rewards, Mapping):
        if not rewards:
            raise ValueError("rewards is an empty mapping; expected {name: reward_fn}")
        out: dict[str, torch.Tensor] = {}
        for name, fn in rewards.items():
            out.update(_call(name, fn, images, prompts))
        return out
    if not callable(rewards):
        raise ValueError(f"reward must be callable as reward_fn(images, prompts), got {type(rewards).__name__}")
    return _call("", rewards, images, prompts)


def objective(named: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Weighted sum of named rewards (every weight 1 when ``weights`` is None)."""
    if weights is None:
        return sum(named.values())
    unknown = sorted(set(weights) - set(named))
    if unknown:
        raise ValueError(f"reward weights name {unknown}, but the rewards are {sorted(named)}")
    return sum(float(w) * named[name] for name, w in weights.items())
