"""What the loop needs from any diffusers scheduler: the extra ``step`` arguments and the predicted x0."""

from __future__ import annotations

import inspect
from typing import Any

import torch

__all__ = ["is_flow_scheduler", "predicted_x0", "step_kwargs"]


def step_kwargs(scheduler: Any, generators: list[torch.Generator] | None, eta: float = 0.0) -> dict[str, Any]:
    """Extra ``scheduler.step`` arguments, as the pipelines pass them."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted and generators is not None:
        kwargs["generator"] = generators
    return kwargs


def is_flow_scheduler(scheduler: Any) -> bool:
    """Whether ``scheduler`` integrates a flow-matching (rectified-flow) model: x_t = (1 - t) x0 + t noise."""
    config = scheduler.config
    return ("FlowMatch" in type(scheduler).__name__ or bool(config.get("use_flow_sigmas", False))
            or config.get("prediction_type") == "flow_prediction")


def _noise_levels(scheduler: Any, step_index: int, t: torch.Tensor,
                  sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sample as x_t = alpha * x0 + sigma * noise, alpha, sigma) at this step."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None:  # DDIM, DDPM, LCM, ...: the training schedule at integer timesteps
        alpha_bar = scheduler.alphas_cumprod[int(t)].to(sample)
        return sample, alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    sigma = sigmas[step_index].to(sample)  # k-diffusion sigma = sqrt((1 - alpha_bar) / alpha_bar)
    alpha = (sigma**2 + 1).rsqrt()
    if float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0:  # Euler, LMS, ...: x = x0 + sigma * noise
        sample = sample * alpha
    return sample, alpha, sigma * alpha


def predicted_x0(scheduler: Any, model_output: torch.Tensor, step_index: int, t: torch.Tensor,
                 sample: torch.Tensor) -> torch.Tensor:
    """The clean latents the denoiser predicts at step ``step_index`` (timestep ``t``) from ``sample``,
    differentiable in ``model_output`` and ``sample``.

    Computed from the scheduler's noise level at that step and its
    ``prediction_type``, without stepping it: the scheduler's state (step
    index, multistep history) and every random generator are left as they
    were, so guidance can call it at every step. Covers flow matching, EDM,
    k-diffusion schedulers (Euler, Euler ancestral, LMS), DPM-Solver / UniPC
    and the DDIM / DDPM / LCM family (LCM's boundary condition included); the
    value is the scheduler's own ``pred_original_sample`` (``denoised`` for
    LCM), before any ``clip_sample`` or thresholding, which would cut gradients.
    """
    config = scheduler.config
    if is_flow_scheduler(scheduler):
        return sample - scheduler.sigmas[step_index].to(sample) * model_output
    if hasattr(scheduler, "precondition_outputs"):  # EDM
        return scheduler.precondition_outputs(sample, model_output, scheduler.sigmas[step_index].to(sample))
    kind = config.get("prediction_type", "epsilon")
    x_t, alpha, sigma = _noise_levels(scheduler, step_index, t, sample)
    if kind == "epsilon":
        x0 = (x_t - sigma * model_output) / alpha
    elif kind == "v_prediction":
        x0 = alpha * x_t - sigma * model_output
    elif kind == "sample":
        x0 = model_output
    else:
        raise ValueError(f"{type(scheduler).__name__} has prediction_type {kind!r}; the predicted x0 is known "
                         "for epsilon, v_prediction, sample and flow matching")
    boundary = getattr(scheduler, "get_scalings_for_boundary_condition_discrete", None)
    if boundary is not None:  # LCM: denoised = c_out * x0 + c_skip * x_t
        c_skip, c_out = boundary(int(t))
        x0 = c_out * x0 + c_skip * sample
    return x0
