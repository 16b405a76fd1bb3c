"""Initial-noise optimisation (ReNO, Eyring et al., NeurIPS 2024): gradient ascent on a sample's initial
noise through the sampler, the VAE decoder and the reward, the weights untouched."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from mst_clipiqa.reward.utils import progress_bar

from ..pipelines.lora import adapters_disabled
from ..pipelines.prompt_sampler import PromptSampler, frozen_weights, scored
from ..pipelines.sampling import BasePrediction, guided_prediction
from ..rewards import Rewards
from .noise_optimization_config import NoiseOptimizationConfig
from .noise_optimization_result import NoiseOptimization
from .patience import MonitorPatience
from .seeds import check_seeds

__all__ = ["NoiseOptimization", "NoiseOptimizationConfig", "chi_nll", "optimize_noise"]


def chi_nll(noise: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (up to a constant) of each sample's noise norm under the chi distribution
    with d = its number of elements: ``r**2 / 2 - (d - 1) log r``, (B,), lowest at ``r = sqrt(d - 1)``.

    ReNO's regulariser: it keeps the optimised noise at the norm a Gaussian sample
    has, where the generator was trained, without pinning any single element.
    """
    flat = noise.float().flatten(1)
    norm = flat.norm(dim=1)
    return 0.5 * norm**2 - (flat.shape[1] - 1) * torch.log(norm)


@dataclass
class _Best:
    """The iterate kept so far: by reward, and (with a monitor) among the iterates up to the monitor's best."""

    reward: float = -math.inf
    iteration: int = -1
    image: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    scores: dict[str, float] = field(default_factory=dict)


def _base_prediction(sampler: PromptSampler, base_distance_coeff: float) -> BasePrediction | None:
    """The DRaFT+ reference: the same denoiser with its LoRA switched off."""
    if base_distance_coeff == 0:
        return None
    denoiser = sampler.family.denoiser
    if not getattr(denoiser, "peft_config", None):
        raise ValueError("base_distance_coeff > 0 penalises the distance between a LoRA-tuned denoiser's predictions "
                         f"and its base model's, but {type(denoiser).__name__} has no LoRA; load one (load_lora) or "
                         "leave base_distance_coeff at 0")
    cond = sampler.conditioning(1)

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with adapters_disabled(denoiser):
            return guided_prediction(sampler.family, denoiser, x, t, cond, sampler.guidance_scale)

    return predict


_RENAMED = {"weights": "reward_weights", "progress": "progress_bar", "kl_coeff": "base_distance_coeff"}


def _config_from_keywords(config: NoiseOptimizationConfig | None, keywords: dict[str, Any]) -> NoiseOptimizationConfig:
    """The settings passed as keywords before there was a config (``steps=...``, ``weights=...``, text options
    such as ``max_sequence_length=...``), with a DeprecationWarning naming each one's config field."""
    config = config or NoiseOptimizationConfig()
    if not keywords:
        return config
    names = {f.name for f in fields(NoiseOptimizationConfig)} - {"encode_kwargs"}
    settings = {_RENAMED.get(k, k): v for k, v in keywords.items() if _RENAMED.get(k, k) in names}
    text = {k: v for k, v in keywords.items() if _RENAMED.get(k, k) not in names}
    moved = [f"{k}= -> {_RENAMED.get(k, k)}=" for k in keywords if _RENAMED.get(k, k) in names]
    moved += [f"{k}= -> encode_kwargs={{{k!r}: ...}}" for k in text]
    warnings.warn(f"optimize_noise's keywords are config fields now: pass config=NoiseOptimizationConfig(...) "
                  f"({'; '.join(moved)})", DeprecationWarning, stacklevel=3)
    if text:
        settings["encode_kwargs"] = {**config.encode_kwargs, **text}
    return replace(config, **settings)


def optimize_noise(pipe: Any, prompt: str, reward: Rewards, config: NoiseOptimizationConfig | None = None, *,
                   noise: torch.Tensor | None = None, monitor: Rewards | None = None,
                   **deprecated: Any) -> NoiseOptimization:
    """Optimise the initial noise of one sample so that ``reward`` rates its image higher (ReNO).

    Each of ``config.steps`` iterations samples the image from the current noise
    (one reward evaluation), keeps it if it is the best so far, and takes one
    step of SGD with Nesterov momentum (ReNO's optimiser) on
    ``-reward + regularization * chi_nll(noise)``, the gradient norm clipped
    to ``grad_clip``. The pipeline's and the reward's weights get no gradient.

    - ``reward``: any form ``RewardFinetuner`` accepts (differentiable in the
      images); ``config.reward_weights`` weight its named outputs.
    - ``config`` (a :class:`NoiseOptimizationConfig`, default ReNO's settings):
      the optimiser, the sampler, the guard rails; ``config.seed``: the start
      noise is the one ``pipe(..., generator=Generator().manual_seed(seed))``
      draws; ``noise`` (of ``family.latent_shape(1, h, w)``) starts from another.
      Stochastic sampler steps draw from that seed's generator at every
      iteration, as in ``pipe(generator=...)``: the start image is the seed's own.
    - ``config.gradient_steps``: K, the last sampler steps whose denoiser Jacobian
      the gradient goes through (None: all, the exact gradient); earlier steps pass
      it on through the scheduler's skip path only (DRaFT-K's truncation).
    - Guard rails against reward hacking: ``config.regularization`` (ReNO: 0.01);
      ``monitor``, an independent scorer: the run stops when it has not improved
      for ``config.patience`` iterations, and the kept iterate is the best by reward
      among those up to the monitor's best; ``config.base_distance_coeff``
      (LoRA-tuned pipelines): the DRaFT+ penalty on the distance between the tuned
      and the base denoiser's predictions along the steps with gradients.
    - ``deprecated``: the settings as keywords (``steps=...``, ``max_sequence_length=...``), as before the
      config; each is taken with a DeprecationWarning naming its config field.

    Returns a :class:`NoiseOptimization`: the best image, its noise and seed,
    the start image, the per-iteration history; ``result.save(dir)`` writes
    them, ``pipe(prompt, **result.pipe_kwargs())`` regenerates the best image.
    """
    options = _config_from_keywords(config, deprecated)
    (seed,) = check_seeds([options.seed], "seed")
    sampler = PromptSampler(pipe, prompt, **options.sampler_options())
    options.check_steps(sampler.num_inference_steps)
    start = sampler.noise([seed]) if noise is None else noise
    sampler.check_noise(start, 1)
    start = start.detach().float().to(sampler.family.pipe._execution_device)
    base = _base_prediction(sampler, options.base_distance_coeff)
    began = time.perf_counter()
    with frozen_weights(pipe, reward, monitor), torch.enable_grad():
        history, kept, initial, stopped = _ascend(sampler, reward, monitor, options, start, seed, base)
    return NoiseOptimization(
        prompt=prompt, seed=seed, image=kept.image, noise=kept.noise, latents=sampler.pipe_latents(kept.noise),
        reward=kept.reward, iteration=kept.iteration, scores=kept.scores, initial_image=initial.image,
        initial_noise=initial.noise, initial_reward=initial.reward, history=history, stopped_early=stopped,
        generator_state=sampler.generators([seed])[0].get_state(),
        settings={**sampler.settings, "steps": options.steps, "lr": options.lr, "momentum": options.momentum,
                  "regularization": options.regularization, "grad_clip": options.grad_clip,
                  "gradient_steps": options.gradient_steps, "patience": options.patience if monitor else None,
                  "base_distance_coeff": options.base_distance_coeff},
        timings={"total_s": time.perf_counter() - began})


def _ascend(sampler: PromptSampler, reward: Rewards, monitor: Rewards | None, options: NoiseOptimizationConfig,
            start: torch.Tensor, seed: int,
            base: BasePrediction | None) -> tuple[list[dict[str, float]], _Best, _Best, bool]:
    noise = start.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([noise], lr=options.lr, momentum=options.momentum, nesterov=options.momentum > 0)
    grad_from = sampler.num_inference_steps - (options.gradient_steps or sampler.num_inference_steps)
    best = kept = initial = _Best()
    watch = MonitorPatience(options.patience)
    history: list[dict[str, float]] = []
    bar = progress_bar(total=options.steps, desc="noise optimisation", unit="it", disable=not options.progress_bar)
    stopped = False
    for it in range(options.steps):
        trajectory = sampler.run(noise, [seed], grad_from=grad_from, latent_gradients=True, base_prediction=base,
                                 gradient_checkpointing=options.gradient_checkpointing)
        images = sampler.decode(trajectory.latents)
        total, named = scored(reward, images, sampler.prompt, options.reward_weights)
        if not _finite(total, "the reward", it, best):
            stopped = True
            break
        scores = {name: float(v.detach()[0]) for name, v in named.items()}
        snapshot = _Best(float(total.detach()[0]), it, images.detach()[0].cpu(), noise.detach().cpu().clone(), scores)
        record = {"iteration": it, "reward": snapshot.reward, "noise_norm": float(noise.detach().norm()),
                  **(scores if len(scores) > 1 else {})}
        if base is not None:
            record["penalty"] = float(trajectory.penalty.detach())
        initial = snapshot if it == 0 else initial
        best = snapshot if snapshot.reward > best.reward else best
        if monitor is None:
            kept = best
        else:
            with torch.no_grad():
                watched = scored(monitor, images.detach(), sampler.prompt, options.monitor_weights)[0]
                record["monitor"] = float(watched[0])
            if watch.update(it, record["monitor"]):
                kept = best
        history.append(record)
        bar.set_postfix(reward=f"{snapshot.reward:.4f}", best=f"{best.reward:.4f}")
        bar.update(1)
        stopped = monitor is not None and watch.exhausted
        if stopped or it == options.steps - 1:
            break
        penalty = options.base_distance_coeff * trajectory.penalty
        loss = -total.sum() + options.regularization * chi_nll(noise).sum() + penalty
        (noise.grad,) = torch.autograd.grad(loss, noise)
        if not _finite(noise.grad, "the gradient of the objective", it, best):
            stopped = True
            break
        if options.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([noise], options.grad_clip)
        optimizer.step()
    bar.close()
    return history, kept if kept.image is not None else best, initial, stopped


def _finite(value: torch.Tensor, what: str, iteration: int, best: _Best) -> bool:
    """Whether ``value`` is finite; if not, a warning that the run stops and keeps ``best`` (an error when
    there is no finite iterate to keep)."""
    if bool(torch.isfinite(value.detach()).all()):
        return True
    seen = value.detach().flatten()[~torch.isfinite(value.detach().flatten())][0].item()
    if best.image is None:
        raise ValueError(f"{what} is {seen} at iteration {iteration}, for the start noise's image: there is no "
                         "finite iterate to keep; check the reward on this pipeline's images")
    warnings.warn(f"{what} is {seen} at iteration {iteration}: noise optimisation stops there and keeps the best "
                  f"finite iterate (iteration {best.iteration}, reward {best.reward:.4g})", RuntimeWarning,
                  stacklevel=4)
    return False
