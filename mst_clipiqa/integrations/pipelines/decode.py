"""VAE decoding that keeps gradients: chunked, checkpointed, mapped to [0, 1]."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mst_clipiqa.reward import straight_through_clamp
from mst_clipiqa.reward.utils import no_autocast

__all__ = ["straight_through_clamp", "unscale_latents", "decode_latents"]


def unscale_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Undo the denoiser-space scaling (``scaling_factor``, ``shift_factor`` or per-channel mean/std)."""
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        std = torch.tensor(std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        return latents * std / config.scaling_factor + mean
    shift = getattr(config, "shift_factor", None) or 0.0
    return latents / config.scaling_factor + shift


def _decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    return vae.decode(z, return_dict=False)[0]


def decode_latents(
    vae: nn.Module, latents: torch.Tensor, *, chunk_size: int = 1, gradient_checkpointing: bool = True
) -> torch.Tensor:
    """Decode (B, C, h, w) denoiser latents to (B, 3, H, W) float32 images in [0, 1], with gradients.

    Decodes ``chunk_size`` latents at a time; with ``gradient_checkpointing``
    each chunk's activations are recomputed during backward instead of kept,
    so the decoder's memory is that of one chunk. A VAE whose config asks for the
    fp32 upcast (``force_upcast``, e.g. SD 1.5's and SDXL's) decodes in fp32 with
    any enclosing autocast off, its half-precision weights cast to fp32 (in place,
    as diffusers' pipelines upcast it); the gradient still reaches the latents.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents must be (B, C, h, w), got shape {tuple(latents.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    upcast = bool(getattr(vae.config, "force_upcast", False))
    if upcast and vae.dtype in (torch.float16, torch.bfloat16):
        vae = vae.float()  # e.g. SDXL's VAE overflows in fp16: the config says so
    z = unscale_latents(vae, latents).to(vae.dtype)
    keep_graph = torch.is_grad_enabled() and z.requires_grad
    parts = []
    # An upcast VAE runs in fp32 under the trainers' autocast too; checkpointing recomputes it the same way.
    with no_autocast(z.device) if upcast else nullcontext():
        for chunk in z.split(chunk_size):
            if gradient_checkpointing and keep_graph:
                parts.append(checkpoint(_decode, vae, chunk, use_reentrant=False))
            else:
                parts.append(_decode(vae, chunk))
    images = (torch.cat(parts).float() + 1.0) / 2.0
    return straight_through_clamp(images)
