"""Stochastic sampling with log-probabilities, per pipeline family: the policy that online RL trains.

DDIM-type families (SD 1.x/2.x, SDXL) sample with DDIM at ``eta > 0`` (the pipeline's scheduler is
replaced by a ``DDIMScheduler`` of the same config, as DDPO does); LCM keeps its own sampler, whose
multistep noise already makes each step Gaussian; flow-matching families (SD3, FLUX.1) take
Flow-GRPO's SDE. Steps inside ``sde_window`` are stochastic and recorded; the others run the
deterministic sampler (DDIM ``eta = 0``, the Euler ODE) and are not trained (MixGRPO / Flow-GRPO-Fast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from mst_clipiqa.runtime.preemption import interruption_point

from .families import Conditioning, Embeddings, pipeline_family
from .sampling import guided_prediction
from .schedulers import is_flow_scheduler
from .transitions import (
    ddim_mean,
    ddim_std,
    flow_sde_mean,
    flow_sde_sigma,
    flow_sde_std,
    gaussian_log_prob,
)

__all__ = ["Rollout", "StepOutput", "StochasticSampler", "policy_scheduler", "sampler_kind"]


def sampler_kind(scheduler: Any) -> str:
    """``"flow"`` (flow matching), ``"lcm"`` (latent consistency) or ``"ddim"`` (any other scheduler with
    a discrete noise schedule, sampled with DDIM)."""
    if is_flow_scheduler(scheduler):
        return "flow"
    if hasattr(scheduler, "get_scalings_for_boundary_condition_discrete"):
        return "lcm"
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"{type(scheduler).__name__} is neither flow matching nor a discrete-time schedule "
                         "(alphas_cumprod); online RL samples with DDIM, LCM or Flow-GRPO's SDE")
    return "ddim"


def policy_scheduler(scheduler: Any) -> Any:
    """A fresh scheduler for the policy's sampler: the same class for flow matching and LCM, a
    ``DDIMScheduler`` from the same config for every other discrete-time scheduler (with DDIM's
    ``clip_sample`` and ``set_alpha_to_one`` off unless that config sets them, as SDXL's DDIM config has)."""
    if sampler_kind(scheduler) == "ddim":
        from diffusers import DDIMScheduler

        config = scheduler.config
        return DDIMScheduler.from_config(config, clip_sample=config.get("clip_sample", False),
                                         set_alpha_to_one=config.get("set_alpha_to_one", False))
    return type(scheduler).from_config(scheduler.config)


@dataclass
class Rollout:
    """Trajectories sampled by :class:`StochasticSampler`, ``B`` of them.

    ``latents[:, k]`` is the state before recorded step ``steps[k]`` (scheduler timestep
    ``timesteps[k]``) and ``next_latents[:, k]`` the state it sampled, with log-probability
    ``log_probs[:, k]``; ``final`` the last latents (denoiser layout); ``images`` their decoded
    images in [0, 1]; ``embeds`` the prompt embeddings (negative ones too under classifier-free
    guidance), one row per trajectory.
    """

    prompts: list[str]
    seeds: list[int]
    embeds: Embeddings
    steps: list[int]
    timesteps: torch.Tensor
    latents: torch.Tensor
    next_latents: torch.Tensor
    log_probs: torch.Tensor
    final: torch.Tensor
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: torch.Tensor | Sequence[int]) -> Rollout:
        """The trajectories at ``index`` (a sub-batch for one minibatch update)."""
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index.tolist()

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[index.to(t.device)]

        return replace(self, prompts=[self.prompts[i] for i in rows], seeds=[self.seeds[i] for i in rows],
                       embeds={k: pick(v) for k, v in self.embeds.items()}, latents=pick(self.latents),
                       next_latents=pick(self.next_latents), log_probs=pick(self.log_probs), final=pick(self.final),
                       images=None if self.images is None else pick(self.images))


@dataclass
class StepOutput:
    """One recorded step recomputed by the current model: (B,) log-probabilities of the recorded next
    latents, the transition's mean and its standard deviation (a float: the same for every trajectory)."""

    log_prob: torch.Tensor
    mean: torch.Tensor
    std: float


class StochasticSampler:
    """The policy's sampler for ``pipe``: Gaussian steps with log-probabilities, recomputable with gradients.

    ``eta``: DDIM's noise (DDPO uses 1.0). ``noise_level``: Flow-GRPO's ``a`` (0.7 in the paper);
    ``sigma_schedule``: ``"flow_grpo"`` (``a sqrt(t / (1 - t))``) or ``"constant"`` (DanceGRPO's ``a``).
    ``sde_window``: ``(start, stop)`` step indices that are stochastic and recorded (None: every step
    that has noise; LCM's last step never has). ``guidance_scale``: classifier-free guidance during
    rollouts and their recomputation, as the family supports it (None: the pipeline's default).
    """

    def __init__(self, pipe: Any, *, num_steps: int = 10, guidance_scale: float | None = None, eta: float = 1.0,
                 noise_level: float = 0.7, sigma_schedule: str = "flow_grpo",
                 sde_window: tuple[int, int] | None = None, height: int | None = None, width: int | None = None,
                 negative_prompt: str | None = None, encode_kwargs: dict[str, Any] | None = None):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.pipe, self.family = pipe, pipeline_family(pipe)
        self.scheduler = policy_scheduler(pipe.scheduler)
        self.kind = sampler_kind(self.scheduler)
        self.num_steps, self.eta = num_steps, float(eta)
        self.noise_level, self.sigma_schedule = float(noise_level), sigma_schedule
        self.guidance_scale = (self.family.call_guidance_scale({}) if guidance_scale is None
                               else float(guidance_scale))
        default_h, default_w = self.family.default_size()
        self.height, self.width = height or default_h, width or default_w
        self.family.check_size(self.height, self.width)
        self.negative_prompt, self.encode_kwargs = negative_prompt, dict(encode_kwargs or {})
        self.encoder: Any = self.family  # what encodes prompts: the family, or a trainer's PromptCache
        shape = self.family.latent_shape(1, self.height, self.width)
        self.family.set_timesteps(self.scheduler, num_steps, shape, pipe._execution_device)
        self.timesteps = self.scheduler.timesteps.clone()
        self.window = self._window(sde_window)
        self.stds = [self._std(i) if i in self.window else 0.0 for i in range(num_steps)]
        self.steps = [i for i in self.window if self.stds[i] > 0]
        if not self.steps:
            raise ValueError(f"no step of the {self.kind} sampler in sde_window {sde_window} has noise "
                             f"(eta={eta}, noise_level={noise_level}); a policy gradient needs at least one "
                             "stochastic step: widen the window or raise the noise")

    def _window(self, window: tuple[int, int] | None) -> range:
        if window is None:
            return range(self.num_steps)
        start, stop = int(window[0]), int(window[1])
        if not 0 <= start < stop <= self.num_steps:
            raise ValueError(f"sde_window must be (start, stop) with 0 <= start < stop <= num_steps "
                             f"({self.num_steps}), got {window}")
        return range(start, stop)

    # --- the transition of step i ---------------------------------------------------------------------

    def _alpha_bars(self, i: int) -> tuple[float, float]:
        sched, t = self.scheduler, int(self.timesteps[i])
        if self.kind == "ddim":
            prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
        else:
            prev = int(self.timesteps[i + 1]) if i + 1 < self.num_steps else -1
        prev_alpha = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
        return float(sched.alphas_cumprod[t]), float(prev_alpha)

    def _flow_times(self, i: int) -> tuple[float, float]:
        sigmas = self.scheduler.sigmas
        return float(sigmas[i]), float(sigmas[i + 1])

    def _std(self, i: int) -> float:
        if self.kind == "flow":
            t, t_next = self._flow_times(i)
            t_cap = float(self.scheduler.sigmas[1])
            return flow_sde_std(t, t_next, self._flow_sigma(t, t_cap))
        alpha_bar, alpha_bar_prev = self._alpha_bars(i)
        if self.kind == "lcm":
            return (1 - alpha_bar_prev) ** 0.5
        return ddim_std(alpha_bar, alpha_bar_prev, self.eta)

    def _flow_sigma(self, t: float, t_cap: float) -> float:
        return flow_sde_sigma(t, self.noise_level, self.sigma_schedule, t_cap)

    def transition_mean(self, model_output: torch.Tensor, i: int, latents: torch.Tensor,
                        stochastic: bool = True) -> torch.Tensor:
        """Mean of step ``i``'s transition from ``latents`` given the (guided) denoiser output, float32;
        ``stochastic=False``: the deterministic sampler's step (DDIM ``eta = 0``, the Euler ODE)."""
        out, x = model_output.float(), latents.float()
        std = self.stds[i] if stochastic else 0.0
        if self.kind == "flow":
            t, t_next = self._flow_times(i)
            sigma = std / (t - t_next) ** 0.5 if std > 0 else 0.0
            return flow_sde_mean(x, out, t, t_next, sigma)
        t = self.timesteps[i]
        x0 = self.family.predicted_x0(self.scheduler, out, i, t, x)
        alpha_bar, alpha_bar_prev = self._alpha_bars(i)
        eps = (x - alpha_bar**0.5 * x0) / (1 - alpha_bar) ** 0.5
        config = self.scheduler.config
        if self.kind == "ddim" and config.get("clip_sample", False):  # as DDIM (and trl's DDPO step) clip x0
            x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
        return ddim_mean(x0, eps, alpha_bar_prev, std)

    # --- rollouts and their recomputation --------------------------------------------------------------

    def encode(self, prompts: Sequence[str]) -> Embeddings:
        """Prompt embeddings, one row per prompt (negative ones too under classifier-free guidance)."""
        return self.encoder.encode(list(prompts), guidance=self.family.uses_cfg(self.guidance_scale),
                                  negative_prompt=self.negative_prompt, **self.encode_kwargs)

    def conditioning(self, embeds: Embeddings, guidance_scale: float | None = None) -> Conditioning:
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return self.family.conditioning(embeds, scale, self.height, self.width)

    def prediction(self, model: nn.Module, latents: torch.Tensor, i: int, cond: Conditioning,
                   guidance_scale: float | None = None) -> torch.Tensor:
        """The (guided) denoiser output at step ``i``."""
        t = self.timesteps[i]
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        x = self.family.model_input(self.scheduler, latents.to(self.pipe.dtype), t)
        return guided_prediction(self.family, model, x, t, cond, scale)

    @torch.no_grad()
    def rollout(self, model: nn.Module, prompts: Sequence[str], seeds: Sequence[int], *,
                stochastic: bool = True, decode: bool = True) -> Rollout:
        """Sample one trajectory per (prompt, seed); the seed's generator draws the initial noise and every
        step's noise, so a (prompt, seed) pair always gives the same trajectory under the same weights.
        ``stochastic=False`` runs the deterministic sampler throughout (evaluation, DiffusionNFT rollouts)
        and records no step."""
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts for {len(seeds)} seeds; expected one seed per prompt")
        embeds = self.encode(prompts)
        cond = self.conditioning(embeds)
        latents, _, generators = self.family.prepare(self.scheduler, seeds, self.height, self.width,
                                                     self.num_steps, torch.float32)
        recorded = self.steps if stochastic else []
        before, after, log_probs = [], [], []
        latents = latents.float()
        for i in range(self.num_steps):
            interruption_point()  # a stop request inside a trainer's step: the step is given up here
            out = self.prediction(model, latents, i, cond)
            if i not in recorded:
                latents = self.transition_mean(out, i, latents, stochastic=False)
                continue
            mean = self.transition_mean(out, i, latents)
            noise = _noise(generators, mean)
            sample = mean + self.stds[i] * noise
            before.append(latents)
            after.append(sample)
            log_probs.append(gaussian_log_prob(sample, mean, self.stds[i]))
            latents = sample
        images = self.family.decode(latents, self.height, self.width,
                                    gradient_checkpointing=False) if decode else None
        return Rollout(prompts, seeds, embeds, list(recorded), self.timesteps[list(recorded)],
                       _stack(before, latents), _stack(after, latents),
                       torch.stack(log_probs, 1) if log_probs else latents.new_zeros(len(prompts), 0),
                       latents, images)

    def step_output(self, model: nn.Module, rollout: Rollout, k: int) -> StepOutput:
        """Recompute recorded step ``rollout.steps[k]`` with ``model`` (gradients as the caller allows)."""
        return self.step_outputs(model, rollout, [k])[0]

    def step_outputs(self, model: nn.Module, rollout: Rollout, ks: Sequence[int]) -> list[StepOutput]:
        """Recompute the recorded steps ``ks`` (indices into ``rollout.steps``) in ONE denoiser call on
        ``len(ks) x B`` rows, each row at its own timestep: the same outputs as :meth:`step_output` per step
        (up to float rounding), fewer and larger calls; activations grow with ``len(ks)``."""
        ks = list(ks)
        if not ks:
            return []
        steps = [rollout.steps[k] for k in ks]
        latents = [rollout.latents[:, k] for k in ks]
        x = torch.cat([self.family.model_input(self.scheduler, z.to(self.pipe.dtype), self.timesteps[i])
                       for z, i in zip(latents, steps)])
        t = torch.cat([self.timesteps[i].expand(len(rollout)) for i in steps])
        guided = self.family.uses_cfg(self.guidance_scale)
        embeds = {name: torch.cat([value] * len(ks)) for name, value in rollout.embeds.items()}
        out = guided_prediction(self.family, model, x, torch.cat([t, t]) if guided else t,
                                self.conditioning(embeds), self.guidance_scale)
        outputs = []
        for k, i, z, part in zip(ks, steps, latents, out.chunk(len(ks))):
            mean = self.transition_mean(part, i, z)
            outputs.append(StepOutput(gaussian_log_prob(rollout.next_latents[:, k], mean, self.stds[i]), mean,
                                      self.stds[i]))
        return outputs


def _noise(generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(like.shape), generator=generators, device=like.device, dtype=torch.float32)


def _stack(steps: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if steps:
        return torch.stack(steps, 1)
    return like.new_zeros(like.shape[0], 0, *like.shape[1:])
