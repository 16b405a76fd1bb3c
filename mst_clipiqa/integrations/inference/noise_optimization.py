"""Initial-noise optimisation (ReNO, Eyring et al., NeurIPS 2024): gradient ascent on a sample's initial
noise through the sampler, the VAE decoder and the reward, the weights untouched."""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from mst_clipiqa.reward.utils import progress_bar

from ..pipelines.lora import adapters_disabled
from ..pipelines.prompt_sampler import PromptSampler, frozen_weights, scored
from ..pipelines.sampling import BasePrediction, guided_prediction
from ..rewards import Rewards
from .noise_optimization_result import NoiseOptimization
from .patience import MonitorPatience
from .seeds import check_seeds

__all__ = ["NoiseOptimization", "check_settings", "chi_nll", "optimize_noise"]


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
class _Options:
    steps: int
    lr: float
    momentum: float
    regularization: float
    grad_clip: float | None
    gradient_steps: int | None
    patience: int
    base_distance_coeff: float
    gradient_checkpointing: bool
    progress: bool

    def check(self, num_inference_steps: int | None) -> None:
        """A ValueError naming every bad setting (``gradient_steps`` against ``num_inference_steps`` when known)."""
        problems = []
        if not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps must be an integer >= 1 (reward evaluations), got {self.steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.regularization) and self.regularization >= 0):
            problems.append(f"regularization must be a finite number >= 0, got {self.regularization!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            problems.append(f"grad_clip must be a number > 0 or None (no clipping), got {self.grad_clip!r}")
        k, most = self.gradient_steps, num_inference_steps or float("inf")
        if k is not None and not (isinstance(k, int) and 1 <= k <= most):
            problems.append(f"gradient_steps must be in [1, num_inference_steps={num_inference_steps}] or None "
                            f"(all steps), got {k!r}")
        if not isinstance(self.patience, int) or self.patience < 1:
            problems.append(f"patience must be an integer >= 1, got {self.patience!r}")
        if not (math.isfinite(self.base_distance_coeff) and self.base_distance_coeff >= 0):
            problems.append(f"base_distance_coeff must be a finite number >= 0, got {self.base_distance_coeff!r}")
        if problems:
            raise ValueError("; ".join(problems))


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


def check_settings(*, num_inference_steps: int | None = None, **settings: Any) -> None:
    """Check :func:`optimize_noise`'s numeric settings (``steps``, ``lr``, ``gradient_steps``, ...) before any
    slow work, e.g. loading a pipeline; a ValueError names every bad one. Those not given take the defaults."""
    defaults = {name: p.default for name, p in inspect.signature(optimize_noise).parameters.items()
                if name in {f.name for f in fields(_Options)}}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; expected some of {sorted(defaults)}")
    _Options(**{**defaults, **settings}).check(num_inference_steps)


def optimize_noise(
    pipe: Any,
    prompt: str,
    reward: Rewards,
    *,
    steps: int = 50,
    lr: float = 5.0,
    momentum: float = 0.9,
    regularization: float = 0.01,
    grad_clip: float | None = 0.1,
    seed: int = 0,
    noise: torch.Tensor | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    gradient_steps: int | None = None,
    gradient_checkpointing: bool = False,
    weights: Mapping[str, float] | None = None,
    monitor: Rewards | None = None,
    monitor_weights: Mapping[str, float] | None = None,
    patience: int = 5,
    base_distance_coeff: float = 0.0,
    height: int | None = None,
    width: int | None = None,
    progress: bool = True,
    **encode_kwargs: Any,
) -> NoiseOptimization:
    """Optimise the initial noise of one sample so that ``reward`` rates its image higher (ReNO).

    Each of the ``steps`` iterations samples the image from the current noise
    (one reward evaluation), keeps it if it is the best so far, and takes one
    step of SGD with Nesterov momentum (ReNO's optimiser) on
    ``-reward + regularization * chi_nll(noise)``, the gradient norm clipped
    to ``grad_clip``. The pipeline's and the reward's weights get no gradient.

    - ``reward``: any form ``RewardFinetuner`` accepts (differentiable in the
      images); ``weights`` weight its named outputs.
    - ``seed``: the start noise is the one ``pipe(..., generator=Generator().manual_seed(seed))``
      draws; ``noise`` (of ``family.latent_shape(1, h, w)``) starts from another.
      Stochastic sampler steps draw from that seed's generator at every
      iteration, as in ``pipe(generator=...)``: the start image is the seed's own.
    - ``gradient_steps``: K, the last sampler steps whose denoiser Jacobian the
      gradient goes through (None: all, the exact gradient); earlier steps pass
      it on through the scheduler's skip path only (DRaFT-K's truncation).
      ``gradient_checkpointing`` recomputes the denoiser's activations in the
      backward pass instead of keeping them.
    - Guard rails against reward hacking: ``regularization`` (ReNO: 0.01);
      ``monitor``, an independent scorer: the run stops when it has not improved
      for ``patience`` iterations, and the kept iterate is the best by reward
      among those up to the monitor's best; ``base_distance_coeff`` (LoRA-tuned
      pipelines): the DRaFT+ penalty on the distance between the tuned and the
      base denoiser's predictions along the steps with gradients.
    - ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``: the
      sampler, defaults as ``pipe(prompt)``; ``encode_kwargs``: ``__call__``'s
      text options (``negative_prompt``, ``max_sequence_length``, ...).

    Returns a :class:`NoiseOptimization`: the best image, its noise and seed,
    the start image, the per-iteration history; ``result.save(dir)`` writes
    them, ``pipe(prompt, **result.pipe_kwargs())`` regenerates the best image.
    """
    if "kl_coeff" in encode_kwargs:  # its name before it was told apart from the policy trainers' KL
        warnings.warn("optimize_noise(kl_coeff=...) is base_distance_coeff=... now", DeprecationWarning, stacklevel=2)
        base_distance_coeff = encode_kwargs.pop("kl_coeff")
    (seed,) = check_seeds([seed], "seed")
    sampler = PromptSampler(pipe, prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                            height=height, width=width, **encode_kwargs)
    options = _Options(steps, float(lr), float(momentum), float(regularization),
                       None if grad_clip is None else float(grad_clip), gradient_steps, patience,
                       float(base_distance_coeff), gradient_checkpointing, progress)
    options.check(sampler.num_inference_steps)
    start = sampler.noise([seed]) if noise is None else noise
    sampler.check_noise(start, 1)
    start = start.detach().float().to(sampler.family.pipe._execution_device)
    base = _base_prediction(sampler, options.base_distance_coeff)
    began = time.perf_counter()
    with frozen_weights(pipe, reward, monitor), torch.enable_grad():
        history, kept, initial, stopped = _ascend(sampler, reward, weights, monitor, monitor_weights, options, start,
                                                  seed, base)
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


def _ascend(sampler: PromptSampler, reward: Rewards, weights: Mapping[str, float] | None, monitor: Rewards | None,
            monitor_weights: Mapping[str, float] | None, options: _Options, start: torch.Tensor, seed: int,
            base: BasePrediction | None) -> tuple[list[dict[str, float]], _Best, _Best, bool]:
    noise = start.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([noise], lr=options.lr, momentum=options.momentum, nesterov=options.momentum > 0)
    grad_from = sampler.num_inference_steps - (options.gradient_steps or sampler.num_inference_steps)
    best = kept = initial = _Best()
    watch = MonitorPatience(options.patience)
    history: list[dict[str, float]] = []
    bar = progress_bar(total=options.steps, desc="noise optimisation", unit="it", disable=not options.progress)
    stopped = False
    for it in range(options.steps):
        trajectory = sampler.run(noise, [seed], grad_from=grad_from, latent_gradients=True, base_prediction=base,
                                 gradient_checkpointing=options.gradient_checkpointing)
        images = sampler.decode(trajectory.latents)
        total, named = scored(reward, images, sampler.prompt, weights)
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
                record["monitor"] = float(scored(monitor, images.detach(), sampler.prompt, monitor_weights)[0][0])
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
