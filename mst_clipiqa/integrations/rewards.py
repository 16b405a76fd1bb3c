"""The reward forms the adapters accept, at one boundary; the weighted objective built from them; scoring
many images without gradients (``score_images``) and the DDPO reward-function contract (``ddpo_reward_fn``).

``RewardFinetuner``, ``optimize_noise``, ``guided_sample``, ``best_of_n``, ``rank_images``,
``score_images`` and ``ddpo_reward_fn`` all take, alone or as a ``{name: reward}`` mapping of any mix:

* ``reward(images, prompts) -> (B,)``, or a mapping of named (B,) outputs (``MSTCLIPIQAReward``);
* ``reward(images) -> (B,)`` or ``(B, 1)``: an image-only scorer;
* an ``nn.Module`` whose ``forward`` has one of these signatures (a callable's signature says which);
* another library's form through its adapter (:mod:`.reward_adapters`): ``from_trl(reward_fn)`` (trl / DDPO
  ``reward_fn(images, prompts, metadata) -> (rewards, metadata)``), ``from_imscore(scorer)``,
  ``from_pyiqa(metric)``. Passed as they are, these are still recognised (trl's by its three arguments, the
  peers' by their package) with a ``DeprecationWarning`` naming the adapter.

Whatever a reward returns, one value per image, in any shape holding B values ((B,), (B, 1), or the
0-d tensor a squeezed 1-image batch gives), becomes (B,).

Images are (B, 3, H, W) float in [0, 1]; a reward that declares another ``input_range``
(``MSTCLIPIQAReward(..., input_range=(-1, 1))``) gets them mapped onto it. A reward whose
``lower_better`` attribute is true is negated, so the objective is always higher-is-better.
The gradient methods (fine-tuning, noise optimisation, guidance) need rewards
that are differentiable in the images; one that returns no gradient there gets
a ValueError saying how to fix it.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mst_clipiqa.reward import score_in_batches
from mst_clipiqa.reward.utils import UNIT, rescale

from .reward_adapters import from_imscore, from_pyiqa, from_trl

__all__ = ["DDPORewardFn", "NamedScores", "RewardFn", "Rewards", "ddpo_reward_fn", "named_rewards", "objective",
           "reward_arity", "score_images"]

RewardFn = Callable[..., Any]
Rewards = RewardFn | Mapping[str, RewardFn]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NO_GRADIENT = (
    "reward {name!r} returned no gradient with respect to the images, and fine-tuning, noise optimisation and "
    "reward guidance backpropagate the reward into the generator or its noise. Compute it from the images with "
    "torch operations, with no torch.no_grad, .detach(), .item(), numpy or PIL conversion on the way. A reward "
    "that cannot be differentiated still works with best_of_n and rank_images, and with policy-gradient "
    "training (trl's DDPOTrainer)."
)


def reward_arity(fn: RewardFn) -> int:
    """How many positional arguments ``fn`` takes: 1 (images), 2 (images, prompts) or 3 (images, prompts,
    metadata: the trl / DDPO form). Signatures that do not say (``*args``) get 2."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return 2
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    positional = [p for p in params if p.kind in _POSITIONAL]
    if sum(p.default is inspect.Parameter.empty for p in positional) >= 3:
        return 3
    return 1 if len(positional) == 1 else 2


def _rewards(name: str, value: Any, images: torch.Tensor) -> torch.Tensor:
    batch = len(images)
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float32), device=images.device)
        except (TypeError, ValueError):
            raise ValueError(f"reward {name!r} returned {type(value).__name__}; expected a float tensor, array or "
                             f"list of shape ({batch},), one reward per image") from None
    if value.ndim != 1 and value.numel() == batch and (value.ndim == 0 or value.shape[0] == batch):
        value = value.reshape(batch)  # (B, 1), or the 0-d a scorer's .squeeze() leaves of a 1-image batch
    if value.shape != (batch,) or not value.is_floating_point():
        raise ValueError(f"reward {name!r} returned {tuple(value.shape)} {value.dtype}; expected a float tensor of "
                         f"shape ({batch},), one reward per image")
    if torch.is_grad_enabled() and images.requires_grad and not value.requires_grad:
        raise ValueError(_NO_GRADIENT.format(name=name))
    return value


def _call(name: str, fn: RewardFn, images: torch.Tensor, prompts: Sequence[str] | None) -> dict[str, torch.Tensor]:
    if not callable(fn):
        raise ValueError(f"reward {name or 'reward'!r} is a {type(fn).__name__}; expected a callable "
                         "reward(images, prompts) or reward(images), or an adapted one (from_trl, from_imscore, "
                         "from_pyiqa)")
    fn = _adapted(name, fn)
    images = _in_input_range(fn, images)
    out = fn(images) if reward_arity(fn) == 1 else fn(images, prompts)
    sign = -1.0 if getattr(fn, "lower_better", False) else 1.0
    if isinstance(out, Mapping):
        return {f"{name}.{key}" if name else key: sign * _rewards(key, v, images) for key, v in out.items()}
    return {name or "reward": sign * _rewards(name or "reward", out, images)}


_PEER_ADAPTERS = {"imscore": from_imscore, "pyiqa": from_pyiqa}


def _adapted(name: str, fn: RewardFn) -> RewardFn:
    """A trl function or a peer's scorer passed as it is: adapted as its adapter would, with a DeprecationWarning
    (the form was guessed from the signature or the package; the adapters say it)."""
    adapter = _PEER_ADAPTERS.get(type(fn).__module__.partition(".")[0])
    if adapter is None and reward_arity(fn) == 3:
        adapter = from_trl
    if adapter is None:
        return fn
    warnings.warn(f"reward {name or 'reward'!r} is a {type(fn).__name__} whose form was guessed; pass "
                  f"{adapter.__name__}(reward) instead (the guess will go in a later release)", DeprecationWarning,
                  stacklevel=4)
    return adapter(fn)


def _in_input_range(fn: RewardFn, images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images mapped (affinely: gradients intact) onto the ``input_range`` the reward declares."""
    input_range = tuple(getattr(fn, "input_range", UNIT))
    return images if input_range == UNIT else rescale(images, UNIT, input_range)


def named_rewards(rewards: Rewards, images: torch.Tensor, prompts: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """Every named (B,) output, each higher-is-better, gradients intact."""
    if isinstance(rewards, Mapping):
        if not rewards:
            raise ValueError("rewards is an empty mapping; expected {name: reward_fn}")
        out: dict[str, torch.Tensor] = {}
        for name, fn in rewards.items():
            out.update(_call(name, fn, images, prompts))
        return out
    return _call("", rewards, images, prompts)


def objective(named: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Weighted sum of named rewards (every weight 1 when ``weights`` is None)."""
    if weights is None:
        return sum(named.values())
    unknown = sorted(set(weights) - set(named))
    if unknown:
        raise ValueError(f"reward weights name {unknown}, but the rewards are {sorted(named)}")
    return sum(float(w) * named[name] for name, w in weights.items())


def _reward_device(reward: Rewards, fallback: torch.device) -> torch.device:
    fns = reward.values() if isinstance(reward, Mapping) else [reward]
    for fn in fns:
        if isinstance(fn, nn.Module):
            for tensor in fn.parameters():
                return tensor.device
    return fallback


def score_images(
    reward: Rewards,
    images: Any,
    prompt: str | Sequence[str] | None = None,
    *,
    batch_size: int = 16,
    weights: Mapping[str, float] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Score many images in batches, no gradients: (N, 3, H, W) in [0, 1], or anything ``reward.score``
    reads (paths, a folder, PIL images, uint8 arrays); one prompt for all, or one per image.

    Returns the weighted objective (N,) and each named output (N,), on the CPU. Images
    of one size are batched together and never resized, whatever the reward.
    """
    fallback = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    device = torch.device(device) if device is not None else _reward_device(reward, fallback)
    named = score_in_batches(lambda batch, prompts: named_rewards(reward, batch, prompts), images, prompt,
                             batch_size=batch_size, device=device)
    return objective(named, weights), named


# trl's DDPO contract: reward_fn(images, prompts, prompt_metadata) -> (rewards, metadata)
DDPORewardFn = Callable[[Any, Sequence[str], Sequence[Any]], tuple[torch.Tensor, dict[str, Any]]]


def ddpo_reward_fn(reward: Rewards, *, weights: Mapping[str, float] | None = None, batch_size: int = 32,
                   differentiable: bool = False) -> DDPORewardFn:
    """Wrap a reward for trl's trainers: ``DDPOTrainer`` (policy gradients) and, with ``differentiable=True``,
    ``AlignPropTrainer`` (backpropagation into the generator).

    The returned function takes images, one prompt per image and the prompts' metadata, and
    returns ``(rewards (B,), metadata)`` with ``metadata`` holding each named output. Policy
    gradients need no reward gradient, so by default it runs without autograd, in batches of
    ``batch_size``, and images may be what DDPO code passes: a float tensor in [0, 1]
    (``output_type="pt"``), a uint8 tensor or numpy array (0..255), NCHW or NHWC, PIL images or
    a list of any of these; the layout and range follow the one rule of
    :mod:`reward.scoring.images`, so each form gives the same rewards. Given images that require
    grad, that function raises a ValueError naming ``differentiable=True``. ``differentiable=True``
    scores the (B, 3, H, W) float tensor in [0, 1] as it is, in one call, and the rewards carry its
    gradient (the metadata's outputs are detached).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if differentiable:
        return _differentiable_reward_fn(reward, weights)

    def reward_fn(images: Any, prompts: Sequence[str], prompt_metadata: Sequence[Any] | None = None
                  ) -> tuple[torch.Tensor, dict[str, Any]]:
        if isinstance(images, torch.Tensor) and images.requires_grad and torch.is_grad_enabled():
            raise ValueError("ddpo_reward_fn(reward) scores without gradients (what DDPO's policy gradients need), "
                             "but these images require grad: a trainer that backpropagates the reward (trl's "
                             "AlignPropTrainer, ...) is calling it. Use ddpo_reward_fn(reward, differentiable=True)")
        return score_images(reward, images, prompts, batch_size=batch_size, weights=weights)

    return reward_fn


def _differentiable_reward_fn(reward: Rewards, weights: Mapping[str, float] | None) -> DDPORewardFn:
    def reward_fn(images: torch.Tensor, prompts: Sequence[str], prompt_metadata: Sequence[Any] | None = None
                  ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
            raise ValueError(f"ddpo_reward_fn(reward, differentiable=True) got {type(images).__name__} "
                             f"{tuple(getattr(images, 'shape', ()))}; expected the (B, 3, H, W) float tensor in [0, 1] "
                             "the trainer backpropagates through (trl's AlignPropTrainer passes it)")
        named = named_rewards(reward, images, list(prompts))
        return objective(named, weights), {name: value.detach() for name, value in named.items()}

    return reward_fn


def map_reward(reward: Rewards) -> Any:
    """The ``MSTCLIPIQAReward`` in ``reward`` (itself, the one ``NamedScores`` wraps, or the first such of a
    mapping), which reports sigma and quality maps; None when there is none."""
    from mst_clipiqa.reward import MSTCLIPIQAReward

    for candidate in reward.values() if isinstance(reward, Mapping) else [reward]:
        candidate = candidate.reward if isinstance(candidate, NamedScores) else candidate
        if isinstance(candidate, MSTCLIPIQAReward):
            return candidate
    return None


class NamedScores(nn.Module):
    """An ``MSTCLIPIQAReward`` as the mapping of every output by name, so that each is logged and
    ``reward_weights`` can weight it (what ``mst-clipiqa finetune`` trains against)."""

    def __init__(self, reward: nn.Module):
        super().__init__()
        self.reward = reward

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        return self.reward.named_scores(images, prompts)
