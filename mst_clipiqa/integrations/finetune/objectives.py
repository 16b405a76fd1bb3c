"""The policy losses: PPO's clipped importance ratio (DDPO, GRPO), the KL to the reference policy, and
DiffusionNFT's negative-aware flow-matching loss. Each returns a scalar to minimise."""

from __future__ import annotations

import torch

__all__ = ["clipped_policy_loss", "ratio_stats", "gaussian_kl", "optimality_probability", "forward_noised",
           "nft_loss"]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def clipped_policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *,
                        clip_range: float, adv_clip_max: float | None = 5.0,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """PPO's ``mean(max(-A r, -A clip(r, 1 - eps, 1 + eps)))`` with ``r = exp(logp - logp_old)`` over (B,)
    samples of one step; advantages clipped to ``[-adv_clip_max, adv_clip_max]`` first (DDPO's 5);
    ``mask`` leaves out samples (skipped groups)."""
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    advantages = advantages.detach().float()
    if adv_clip_max is not None:
        advantages = advantages.clamp(-adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return _masked_mean(torch.maximum(unclipped, clipped), mask)


@torch.no_grad()
def ratio_stats(log_prob: torch.Tensor, old_log_prob: torch.Tensor, clip_range: float) -> dict[str, float]:
    """Importance-ratio statistics of one step: mean / min / max ratio, the fraction outside the clip
    range, and the approximate KL ``mean((logp - logp_old)^2) / 2`` (trl's DDPO)."""
    diff = (log_prob - old_log_prob).float()
    ratio = diff.exp()
    return {"ratio_mean": float(ratio.mean()), "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
            "clip_fraction": float(((ratio - 1).abs() > clip_range).float().mean()),
            "approx_kl": float(0.5 * diff.pow(2).mean())}


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """(B,) KL between two Gaussians of equal variance, ``||mu - mu_ref||^2 / (2 std^2)``, averaged over the
    latent elements like the log-probabilities (Flow-GRPO's KL term)."""
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    return (mean.float() - ref_mean.detach().float()).pow(2).flatten(1).mean(1) / (2 * std**2)


def optimality_probability(advantages: torch.Tensor, adv_clip_max: float = 5.0) -> torch.Tensor:
    """DiffusionNFT's ``r = 1/2 + 1/2 clip(A / A_max, -1, 1)`` in [0, 1] from normalised rewards ``A``."""
    if adv_clip_max <= 0:
        raise ValueError(f"adv_clip_max must be > 0, got {adv_clip_max}")
    return 0.5 + 0.5 * (advantages.detach().float() / adv_clip_max).clamp(-1, 1)


def forward_noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The flow-matching forward process ``x_t = (1 - t) x0 + t noise`` with (B,) times ``t``."""
    t = t.float().view(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0.float() + t * noise.float()


def nft_loss(v_theta: torch.Tensor, v_old: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
             r: torch.Tensor, beta: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """DiffusionNFT's loss ``r ||v+ - v*||^2 + (1 - r) ||v- - v*||^2`` (each averaged over the elements),
    with the implicit positive / negative policies ``v+ = (1 - beta) v_old + beta v_theta`` and
    ``v- = (1 + beta) v_old - beta v_theta`` around the frozen old policy and target ``v* = noise - x0``."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    v_theta, v_old = v_theta.float(), v_old.detach().float()
    target = (noise.float() - x0.float()).detach()
    positive = (1 - beta) * v_old + beta * v_theta
    negative = (1 + beta) * v_old - beta * v_theta
    pos_err = (positive - target).pow(2).flatten(1).mean(1)
    neg_err = (negative - target).pow(2).flatten(1).mean(1)
    r = r.detach().float()
    return _masked_mean(r * pos_err + (1 - r) * neg_err, mask)
