"""Gaussian sampler transitions: the mean and standard deviation of one stochastic step, and its log-density.

DDIM type (DDPO, Black et al. 2023): ``x_prev ~ N(sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps, s^2 I)``
with ``s = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))`` (DDIM's eq. 16; ``a`` the
cumulative alphas). LCM's own multistep sampler is the case ``s^2 = 1 - a_prev``.

Flow matching (Flow-GRPO, Liu et al. 2025), in diffusers' convention: ``x_t = (1 - t) x0 + t noise``,
the model predicts ``v = noise - x0`` and sampling runs ``t`` from 1 down to 0 with ``dt = t_next - t < 0``.
The score is ``-(x + (1 - t) v) / t``; the reverse-time SDE with the ODE's marginals is
``x_next = x + [v + sigma^2 / (2 t) (x + (1 - t) v)] dt + sigma sqrt(-dt) noise``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gaussian_log_prob", "ddim_std", "ddim_mean", "flow_sde_sigma", "flow_sde_mean", "flow_sde_std"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """(B,) log-density of ``sample`` under ``N(mean, std^2 I)``, averaged over the latent elements.

    The average (not the sum) is trl's ``ddim_step_with_logprob`` and Flow-GRPO's convention: importance
    ratios ``exp(logp - logp_old)`` then stay near 1 at any latent size, which the clip ranges assume.
    The sample is a constant (detached): only the mean carries gradients.
    """
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    if not bool((std > 0).all()):
        raise ValueError(f"a Gaussian log-density needs std > 0, got {std.min().item()}; "
                         "deterministic steps have none and are not recorded")
    diff = sample.detach().float() - mean.float()
    return (-diff.pow(2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).flatten(1).mean(1)


def ddim_std(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """DDIM's ``sigma_t(eta)`` (its eq. 16): ``eta = 1`` is the DDPM posterior's, ``eta = 0`` deterministic."""
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
    return eta * math.sqrt(max(variance, 0.0))


def ddim_mean(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_prev: float, std: float) -> torch.Tensor:
    """Mean of the DDIM step from predicted clean latents ``x0`` and predicted noise ``eps``."""
    direction = math.sqrt(max(1 - alpha_bar_prev - std**2, 0.0))
    return math.sqrt(alpha_bar_prev) * x0 + direction * eps


def flow_sde_sigma(t: float, noise_level: float, schedule: str = "flow_grpo", t_cap: float = 0.0) -> float:
    """The SDE's diffusion coefficient at ``t``: ``a sqrt(t / (1 - t))`` (Flow-GRPO) or ``a`` (DanceGRPO,
    ``schedule="constant"``). At ``t = 1`` Flow-GRPO's coefficient is infinite; like its code, ``1 - t``
    then reads ``1 - t_cap`` (the schedule's second ``t``)."""
    if schedule == "constant":
        return float(noise_level)
    if schedule != "flow_grpo":
        raise ValueError(f"sigma_schedule must be 'flow_grpo' or 'constant', got {schedule!r}")
    return float(noise_level) * math.sqrt(t / (1 - (t_cap if t >= 1 else t)))


def flow_sde_mean(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, sigma: float) -> torch.Tensor:
    """Mean of the SDE step from ``t`` to ``t_next < t`` (``sigma = 0``: the Euler ODE step ``x + v dt``)."""
    dt = t_next - t
    return x + (v + sigma**2 / (2 * t) * (x + (1 - t) * v)) * dt


def flow_sde_std(t: float, t_next: float, sigma: float) -> float:
    """Standard deviation of the SDE step: ``sigma sqrt(-dt)``."""
    return sigma * math.sqrt(t - t_next)
