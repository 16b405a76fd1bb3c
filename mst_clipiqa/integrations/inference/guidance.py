"""Reward-gradient guidance during sampling (universal-guidance / DPS style): at each of the last M steps,
nudge the latents along the reward gradient of the predicted clean image; no weight changes."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mst_clipiqa.reward.utils import progress_bar

from ..pipelines.prompt_sampler import PromptSampler, frozen_weights, scored
from ..rewards import Rewards
from .seeds import check_seeds

__all__ = ["GuidedSamples", "guided_sample", "guidance_schedule"]

SCHEDULES = ("constant", "increasing", "decreasing")


def guidance_schedule(schedule: str | Sequence[float], steps: int) -> list[float]:
    """The multiplier of the reward scale at each of ``steps`` guided steps: ``"constant"`` (1 each),
    ``"increasing"`` (1/M up to 1: strongest at the end, when the predicted image is sharp),
    ``"decreasing"`` (1 down to 1/M), or ``steps`` numbers of your own."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} or a list of {steps} numbers, "
                             f"got {schedule!r}")
        ramp = [(k + 1) / steps for k in range(steps)]
        return {"constant": [1.0] * steps, "increasing": ramp, "decreasing": ramp[::-1]}[schedule]
    values = [float(v) for v in schedule]
    if len(values) != steps or not all(math.isfinite(v) for v in values):
        raise ValueError(f"schedule must hold one finite number per guided step ({steps}), got {list(schedule)}")
    return values


@dataclass
class GuidedSamples:
    """The result of :func:`guided_sample`: one image per seed, best first is not implied (seed order).

    ``rewards`` (B,): the objective of the final images; ``scores``: each named
    output (B,); ``step_rewards`` (M, B): the objective of the predicted clean
    image at each guided step (what the gradient was taken of);
    ``evaluations``: reward calls per image (M with gradients, one final).
    """

    prompt: str
    seeds: list[int]
    images: torch.Tensor
    rewards: torch.Tensor
    step_rewards: torch.Tensor
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        return len(self.step_rewards) + 1


class _RewardGuide:
    """The ``guide`` hook of ``sampling.denoise``: the reward gradient of the predicted x0, as a latent nudge
    of ``scale`` times the predicted clean latents' RMS (so one scale suits VP, VE and flow schedulers)."""

    def __init__(self, sampler: PromptSampler, reward: Rewards, weights: Mapping[str, float] | None,
                 scales: list[float], bar: Any):
        self.sampler, self.reward, self.weights, self.scales, self.bar = sampler, reward, weights, scales, bar
        self.first = sampler.num_inference_steps - len(scales)
        self.step_rewards: list[torch.Tensor] = []
        self.unguided: dict[int, list[int]] = {}

    def __call__(self, i: int, t: torch.Tensor, latents: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        sampler = self.sampler
        x0 = sampler.family.predicted_x0(sampler.scheduler, model_output, i, t, latents)
        total, _ = scored(self.reward, sampler.decode(x0), sampler.prompt, self.weights)
        (grad,) = torch.autograd.grad(total.sum(), latents)
        self.step_rewards.append(total.detach().float().cpu())
        self.bar.set_postfix(reward=f"{float(total.detach().mean()):.4f}")
        self.bar.update(1)
        shape = (-1, *([1] * (grad.ndim - 1)))
        size = x0.detach().float().flatten(1).pow(2).mean(1).sqrt().view(shape)
        direction = grad.float() / grad.float().flatten(1).pow(2).mean(1).sqrt().clamp(min=1e-12).view(shape)
        nudge = self.scales[i - self.first] * size * direction
        finite = torch.isfinite(total.detach()) & torch.isfinite(nudge.flatten(1)).all(1)
        for b in (~finite).nonzero().flatten().tolist():
            self.unguided.setdefault(b, []).append(i)  # the latents so far are kept: this step goes unguided
        return torch.where(finite.view(shape), nudge, 0).to(latents.dtype)

    def warn_unguided(self, seeds: list[int]) -> None:
        """One warning naming the seeds and steps where the reward or its gradient was NaN or inf."""
        if self.unguided:
            where = {seeds[b]: steps for b, steps in sorted(self.unguided.items())}
            warnings.warn(f"the reward or its gradient was NaN or inf at some guided steps (seed: steps {where}); "
                          "those steps went unguided for those images, which keep their last finite latents",
                          RuntimeWarning, stacklevel=3)


def guided_sample(
    pipe: Any,
    prompt: str,
    reward: Rewards,
    *,
    seeds: Sequence[int] = (0,),
    reward_scale: float = 0.1,
    guided_steps: int | None = None,
    schedule: str | Sequence[float] = "constant",
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    weights: Mapping[str, float] | None = None,
    gradient_checkpointing: bool = False,
    height: int | None = None,
    width: int | None = None,
    progress: bool = True,
    **encode_kwargs: Any,
) -> GuidedSamples:
    """Sample one image per seed, steering each of the last ``guided_steps`` steps (M; None: all) by the
    reward: after the scheduler step, the latents move along the gradient, with respect to the step's
    input latents, of the reward of the image decoded from the predicted clean latents (DPS / universal
    guidance's forward guidance).

    The move at guided step k is ``reward_scale * schedule[k]`` times the RMS of
    the predicted clean latents, along the normalised gradient: ``reward_scale``
    is a fraction of the image signal per step, whatever the scheduler's noise
    scaling. ``schedule``: see :func:`guidance_schedule`. Each guided step costs
    one denoiser call with gradients, a VAE decode and a reward evaluation with
    its backward pass. The weights get no gradient. With ``reward_scale=0`` the
    images are those of ``pipe(prompt, generator=[Generator().manual_seed(s) ...])``.

    ``reward``: any form ``RewardFinetuner`` accepts (differentiable in the
    images), ``weights`` weight its named outputs; the sampler options as in
    :func:`optimize_noise`.
    """
    sampler = PromptSampler(pipe, prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                            height=height, width=width, **encode_kwargs)
    steps = sampler.num_inference_steps
    m = steps if guided_steps is None else guided_steps
    if not (isinstance(m, int) and 1 <= m <= steps):
        raise ValueError(f"guided_steps must be in [1, num_inference_steps={steps}] or None (all), "
                         f"got {guided_steps!r}")
    if not (math.isfinite(reward_scale) and reward_scale >= 0):
        raise ValueError(f"reward_scale must be a finite number >= 0, got {reward_scale!r}")
    seeds = check_seeds(seeds)
    if not seeds:
        raise ValueError("seeds is empty; expected at least one seed")
    scales = [reward_scale * v for v in guidance_schedule(schedule, m)]
    began = time.perf_counter()
    bar = progress_bar(total=m, desc="reward guidance", unit="step", disable=not progress)
    guide = _RewardGuide(sampler, reward, weights, scales, bar)
    with frozen_weights(pipe, reward), torch.enable_grad():
        latents = sampler.run(sampler.noise(seeds), seeds, grad_from=steps - m, guide=guide,
                              gradient_checkpointing=gradient_checkpointing).latents
    bar.close()
    guide.warn_unguided(seeds)
    with torch.no_grad():
        images = sampler.decode(latents)
        total, named = scored(reward, images, prompt, weights)
    return GuidedSamples(
        prompt=prompt, seeds=seeds, images=images.cpu(), rewards=total.float().cpu(),
        step_rewards=torch.stack(guide.step_rewards), scores={k: v.float().cpu() for k, v in named.items()},
        settings={**sampler.settings, "reward_scale": reward_scale, "guided_steps": m,
                  "schedule": schedule if isinstance(schedule, str) else list(schedule)},
        timings={"total_s": time.perf_counter() - began})
