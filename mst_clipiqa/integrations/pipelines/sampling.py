"""The differentiable denoising loop shared by DRaFT-K, AlignProp, ReFL, noise optimisation and reward guidance.

The three methods differ only in where gradients are kept:

* DRaFT-K: ``grad_from = T - K`` for every trajectory.
* AlignProp: ``grad_from`` drawn per trajectory, every denoiser call checkpointed.
* ReFL: ``grad_from = stop_at = s`` for a random late step ``s``: the loop runs
  without grad up to ``s``, makes one denoiser call with grad and returns the
  predicted x0 instead of finishing.

Inference-time methods keep the weights frozen: noise optimisation adds
``latent_gradients`` (the gradient reaches the initial noise), reward guidance
a ``guide`` that corrects the latents at each step from ``grad_from``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mst_clipiqa.runtime.preemption import interruption_point

from .families import Conditioning, PipelineFamily
from .schedulers import predicted_x0, step_kwargs

__all__ = ["BasePrediction", "Guide", "Trajectory", "denoise", "guided_prediction", "predicted_x0", "step_kwargs"]

BasePrediction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Guide = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Trajectory:
    """The end of a denoising loop.

    ``latents``: final latents, or the predicted x0 at ``stop_at``; ``penalty``:
    mean squared distance between the trained and the base predictions over
    the steps that kept gradients (0 when no base model was given).
    """

    latents: torch.Tensor
    penalty: torch.Tensor


def guided_prediction(
    family: PipelineFamily,
    denoiser: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Conditioning,
    guidance_scale: float = 1.0,
    gradient_checkpointing: bool = False,
) -> torch.Tensor:
    """One denoiser call on scheduler-scaled input, with classifier-free guidance when ``guidance_scale > 1``."""
    guided = family.uses_cfg(guidance_scale)
    model_input = torch.cat([x, x]) if guided else x
    call = partial(family.predict, denoiser, cond=cond)
    if gradient_checkpointing and torch.is_grad_enabled():
        out = checkpoint(call, model_input, t, use_reentrant=False)
    else:
        out = call(model_input, t)
    return family.guide(out, guidance_scale) if guided else out


def _cutoffs(grad_from: torch.Tensor | int | None, batch: int, num_steps: int) -> torch.Tensor:
    if grad_from is None:
        return torch.full((batch,), num_steps)
    cutoffs = torch.as_tensor(grad_from).cpu().long().flatten()
    if cutoffs.numel() == 1:
        return cutoffs.expand(batch)
    if cutoffs.shape != (batch,):
        raise ValueError(f"grad_from must be an int or have one entry per trajectory ({batch}), "
                         f"got shape {tuple(cutoffs.shape)}")
    return cutoffs


def denoise(
    family: PipelineFamily,
    denoiser: nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    cond: Conditioning,
    timesteps: torch.Tensor,
    *,
    grad_from: torch.Tensor | int | None = None,
    stop_at: int | None = None,
    guidance_scale: float = 1.0,
    gradient_checkpointing: bool = False,
    base_prediction: BasePrediction | None = None,
    extra_step_kwargs: dict[str, Any] | None = None,
    latent_gradients: bool = False,
    guide: Guide | None = None,
) -> Trajectory:
    """Run the scheduler from ``latents`` through ``timesteps`` (already set on ``scheduler``).

    ``grad_from``: step index from which each trajectory's denoiser outputs keep
    gradients (an int for all, or a (B,) tensor; None: no gradients at all).
    Earlier steps run under ``no_grad``; per-trajectory cut-offs detach the
    outputs of trajectories whose cut-off is still ahead. ``stop_at``: return
    the predicted x0 at that step index (ReFL). ``base_prediction(x, t)``: the
    frozen model's output for the DRaFT+ penalty on steps with gradients.

    For gradients with respect to the initial ``latents`` (noise optimisation):
    ``latent_gradients`` keeps the scheduler steps before ``grad_from`` in the
    graph, on detached denoiser outputs, so the gradient reaches the initial
    latents through the scheduler's skip path while the denoiser's Jacobian
    counts only from ``grad_from`` on (DRaFT-K's truncation, for the noise).
    ``guide(i, t, latents, model_output)``: on each step from ``grad_from``,
    with ``latents`` a leaf that requires grad and ``model_output`` computed
    from it; returns a correction added to the stepped latents (reward
    guidance), which then continue without a graph.
    """
    num_steps = len(timesteps)
    last = num_steps - 1 if stop_at is None else stop_at
    if not 0 <= last < num_steps:
        raise ValueError(f"stop_at must be in [0, {num_steps - 1}], got {stop_at}")
    cutoffs = _cutoffs(grad_from, latents.shape[0], num_steps)
    first_grad = int(cutoffs.min())
    step_kw = extra_step_kwargs or {}
    penalty, penalty_steps = latents.new_zeros(()), 0
    grad_allowed = torch.is_grad_enabled()
    for i, t in enumerate(timesteps[: last + 1]):
        interruption_point()  # a stop request inside a trainer's step: the step is given up here
        with_grad = grad_allowed and i >= first_grad
        guided = guide is not None and with_grad
        with torch.set_grad_enabled(with_grad):
            if guided:
                latents = latents.detach().requires_grad_(True)
            x = family.model_input(scheduler, latents, t)
            out = guided_prediction(family, denoiser, x, t, cond, guidance_scale, gradient_checkpointing)
            if with_grad:
                keep = (cutoffs <= i).to(out.device)
                if not bool(keep.all()):
                    out = torch.where(keep.view(-1, *([1] * (out.ndim - 1))), out, out.detach())
                if base_prediction is not None:
                    with torch.no_grad():
                        base = base_prediction(x, t)
                    per_sample = (out.float() - base.float()).pow(2).flatten(1).mean(1)
                    penalty = penalty + (per_sample * keep).sum() / keep.sum().clamp(min=1)
                    penalty_steps += 1
            if i == stop_at:
                x0 = family.predicted_x0(scheduler, out, i, t, latents)
                for _ in range(i + 1, num_steps):  # skipped steps still count: processes that stop at another
                    interruption_point()  # step pass as many points, which a run of several agrees on
                return Trajectory(x0, penalty / max(penalty_steps, 1))
            correction = guide(i, t, latents, out) if guided else None
        with torch.set_grad_enabled(with_grad or (grad_allowed and latent_gradients)):
            if correction is not None:
                latents, out = latents.detach(), out.detach()
            latents = family.step(scheduler, out, t, latents, step_kw)
            if correction is not None:
                latents = latents + correction.detach()
    return Trajectory(latents, penalty / max(penalty_steps, 1))
