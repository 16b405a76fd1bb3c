"""Drop-ins for the training stacks the field uses, each in the call shape of that stack's own code (docs/stacks.md):

* Flow-GRPO (``yifan123/flow_grpo``): :func:`flow_grpo_scorer`, one of its per-scorer functions
  ``fn(images, prompts, metadata) -> (scores, {})``, and :func:`flow_grpo_reward_fn`, its whole ``reward_fn``
  ``fn(images, prompts, metadata, only_strict=True) -> ({"avg": ..., name: ...}, {})``;
* Flow-Factory (``X-GenGroup/Flow-Factory``): :class:`FlowFactoryPointwiseReward` and
  :class:`FlowFactoryGroupwiseReward`, built as it builds reward models (``cls(config=..., accelerator=...)``) and
  called ``model(prompt=[...], image=[...])`` -> an object with ``.rewards``;
* trl's ``DDPOTrainer(async_reward_computation=True)``: :func:`trl_async_reward_fn`, whose calls return futures.

Each takes any reward form, a :class:`~.serving.RemoteReward` included; none imports its stack.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .rewards import DDPORewardFn, Rewards, ddpo_reward_fn

__all__ = ["FlowFactoryGroupwiseReward", "FlowFactoryPointwiseReward", "StackRewards", "flow_grpo_reward_fn",
           "flow_grpo_scorer", "trl_async_reward_fn"]


def flow_grpo_scorer(reward: Rewards, *, weights: Mapping[str, float] | None = None, batch_size: int = 32
                     ) -> Any:
    """One of Flow-GRPO's per-scorer functions (what ``flow_grpo.rewards.multi_score`` calls for each name):
    ``fn(images, prompts, metadata) -> (scores (B,) float32 array, {})``; images as Flow-GRPO passes them (a
    float NCHW tensor in [0, 1], uint8 NHWC arrays, PIL images)."""
    score = ddpo_reward_fn(reward, weights=weights, batch_size=batch_size)

    def scorer(images: Any, prompts: Sequence[str], metadata: Any = None) -> tuple[np.ndarray, dict]:
        rewards, _ = score(images, list(prompts))
        return rewards.numpy(), {}

    return scorer


def flow_grpo_reward_fn(reward: Rewards, *, weights: Mapping[str, float] | None = None, batch_size: int = 32
                        ) -> Any:
    """Flow-GRPO's whole ``reward_fn``: ``fn(images, prompts, metadata, only_strict=True, **_) -> (scores, {})``
    where ``scores["avg"]`` is the objective Flow-GRPO trains on and every named output is logged beside it.
    ``only_strict`` (GenEval's) and ``ref_images`` (some forks') do not apply to this reward and are ignored."""
    score = ddpo_reward_fn(reward, weights=weights, batch_size=batch_size)

    def reward_fn(images: Any, prompts: Sequence[str], metadata: Any = None, only_strict: bool = True,
                  **_: Any) -> tuple[dict[str, np.ndarray], dict]:
        rewards, named = score(images, list(prompts))
        return {"avg": rewards.numpy(), **{name: value.numpy() for name, value in named.items()}}, {}

    return reward_fn


def trl_async_reward_fn(reward: Rewards, *, weights: Mapping[str, float] | None = None, batch_size: int = 32,
                        max_workers: int = 1) -> DDPORewardFn:
    """trl's ``DDPOTrainer(..., async_reward_computation=True)`` form: each call returns ``(future rewards, future
    metadata)`` at once and scores on its own threads (``max_workers``), while trl samples on."""
    score = ddpo_reward_fn(reward, weights=weights, batch_size=batch_size)
    executor = ThreadPoolExecutor(max_workers, thread_name_prefix="trl-reward")

    def reward_fn(images: Any, prompts: Sequence[str], prompt_metadata: Any = None) -> tuple[Future, Future]:
        images = images.detach().cpu() if isinstance(images, torch.Tensor) else images
        both = executor.submit(score, images, list(prompts))
        return _part(both, 0), _part(both, 1)

    reward_fn.executor = executor
    return reward_fn


def _part(future: Future, index: int) -> Future:
    part: Future = Future()

    def done(source: Future) -> None:
        error = source.exception()
        if error is not None:
            part.set_exception(error)
        else:
            part.set_result(source.result()[index])

    future.add_done_callback(done)
    return part


@dataclass
class StackRewards:
    """What Flow-Factory's reward models return: ``rewards`` (B,) and ``extra_info`` (every named output)."""

    rewards: torch.Tensor
    extra_info: dict[str, Any] | None = None


class FlowFactoryPointwiseReward:
    """A Flow-Factory pointwise reward model: its config names the reward (``model_name_or_path``: a model name,
    trained folder or Hub id, default ``paper-A``; or ``server_url`` of ``mst-clipiqa serve``, with ``token``,
    ``timeout``), read from ``config.extra_kwargs`` or the config's attributes. ``reward=`` builds it from any
    reward form directly. Called ``model(prompt=[...], image=[PIL or (C, H, W) tensors])``."""

    required_fields: tuple[str, ...] = ("prompt", "image")
    use_tensor_inputs = False

    def __init__(self, config: Any = None, accelerator: Any = None, *, reward: Rewards | None = None,
                 batch_size: int | None = None):
        self.config, self.accelerator = config, accelerator
        self.device = torch.device(getattr(accelerator, "device", "cpu"))
        self.reward = reward if reward is not None else _reward_from(config, self.device)
        self.score = ddpo_reward_fn(self.reward, batch_size=batch_size or int(_setting(config, "batch_size", 32)))

    @torch.no_grad()
    def __call__(self, prompt: Sequence[str], image: Sequence[Any] | None = None, video: Any = None,
                 condition_images: Any = None, condition_videos: Any = None, **kwargs: Any) -> StackRewards:
        if image is None or video is not None:
            raise ValueError("MST-CLIPIQA scores images: pass image=[...] (required_fields prompt, image)")
        images = [item.float() if isinstance(item, torch.Tensor) else item for item in image]
        rewards, named = self.score(images, list(prompt))
        return StackRewards(rewards.to(self.device), {name: value.tolist() for name, value in named.items()})

    def to(self, device: torch.device | str) -> FlowFactoryPointwiseReward:
        self.device = torch.device(device)
        if isinstance(self.reward, torch.nn.Module):
            self.reward.to(self.device)
        return self


class FlowFactoryGroupwiseReward(FlowFactoryPointwiseReward):
    """The same reward as a Flow-Factory groupwise model (called once per group; MST-CLIPIQA scores each image on
    its own, so the rewards are the pointwise ones, in the group's order)."""


def _setting(config: Any, name: str, default: Any = None) -> Any:
    extra = getattr(config, "extra_kwargs", None)
    if isinstance(extra, Mapping) and name in extra:
        return extra[name]
    return getattr(config, name, default)


def _reward_from(config: Any, device: torch.device) -> Rewards:
    from mst_clipiqa.reward import MSTCLIPIQAReward

    from .serving import RemoteReward

    url = _setting(config, "server_url")
    if url:
        return RemoteReward(url, token=_setting(config, "token"), timeout=float(_setting(config, "timeout", 60.0)))
    return MSTCLIPIQAReward.from_pretrained(_setting(config, "model_name_or_path", "paper-A"), device=device)
