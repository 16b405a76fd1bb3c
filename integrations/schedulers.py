"""What the loop needs from any diffusers scheduler: the extra ``step`` arguments and the predicted x0."""

from __future__ import annotations

import inspect
from typing import Any

import torch

__all__ = ["predicted_x0", "step_kwargs"]


def step_kwargs(scheduler: Any, generators: list[torch.Generator] | None, eta: float = 0.0) -> dict[str, Any]:
    """Extra ``scheduler.step`` arguments, as the pipelines pass them."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted and generators is not None:
        kwargs["generator"] = generators
    return kwargs


def predicted_x0(scheduler: Any, model_output: torch.Tensor, step_index: int, t: torch.Tensor,
                 sample: torch.Tensor) -> torch.Tensor:
    """The clean latents the denoiser predicts at this step (differentiable in ``model_output``).

    Flow matching: ``x - sigma * v``; otherwise the scheduler's own
    ``pred_original_sample`` (DDIM, DDPM, Euler) or ``denoised`` (LCM). This
    calls ``scheduler.step``, so use it at the last step the loop runs.
    """
    if hasattr(scheduler, "sigmas") and "FlowMatch" in type(scheduler).__name__:
        return sample - scheduler.sigmas[step_index].to(sample) * model_output
    out = scheduler.step(model_output, t, sample, return_dict=True)
    x0 = getattr(out, "pred_original_sample", None)
    if x0 is None:
        x0 = getattr(out, "denoised", None)
    if x0 is None:
        raise ValueError(f"{type(scheduler).__name__}.step does not return the predicted x0; use a scheduler "
                         "that does (DDIM, DDPM, Euler, LCM) or a flow-matching scheduler")
    return x0
