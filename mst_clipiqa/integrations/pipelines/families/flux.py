"""FLUX.1: ``FluxTransformer2DModel`` on packed latents with a flow-matching scheduler."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Conditioning, Embeddings, PipelineFamily

__all__ = ["FluxFamily"]


class FluxFamily(PipelineFamily):
    """FLUX.1: ``FluxTransformer2DModel`` on packed 2x2 latent patches with a flow-matching scheduler.

    ``guidance_scale`` feeds the guidance embedding of guidance-distilled
    models (FLUX.1-dev), as the pipeline does; no classifier-free guidance.
    """

    pipelines = ("FluxPipeline",)
    denoiser_name = "transformer"
    encode_outputs = ("prompt_embeds", "pooled_prompt_embeds", None)

    def default_size(self) -> tuple[int, int]:
        side = int(self.pipe.default_sample_size) * int(self.pipe.vae_scale_factor)
        return side, side

    def _latent_multiple(self) -> int:
        return 2

    def uses_cfg(self, guidance_scale: float) -> bool:
        return False

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        factor = 2 * int(self.pipe.vae_scale_factor)
        return batch, int(self.denoiser.config.in_channels) // 4, 2 * (height // factor), 2 * (width // factor)

    def pack(self, noise: torch.Tensor) -> torch.Tensor:
        return self.pipe._pack_latents(noise, *noise.shape)

    def vae_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.pipe._unpack_latents(latents, height, width, self.pipe.vae_scale_factor)

    def set_timesteps(self, scheduler: Any, num_steps: int, shape: tuple[int, ...], device: torch.device) -> None:
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        cfg = scheduler.config
        sigmas = None if cfg.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / num_steps, num_steps)
        mu = calculate_shift((shape[-2] // 2) * (shape[-1] // 2), cfg.get("base_image_seq_len", 256),
                             cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                             cfg.get("max_shift", 1.15))
        if sigmas is None:
            scheduler.set_timesteps(num_steps, device=device, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)

    def conditioning(self, embeds: Embeddings, guidance_scale: float, height: int, width: int) -> Conditioning:
        prompt_embeds = embeds["prompt_embeds"]
        batch, device, dtype = len(prompt_embeds), prompt_embeds.device, prompt_embeds.dtype
        _, _, h, w = self.latent_shape(batch, height, width)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), float(guidance_scale), device=device, dtype=torch.float32)
        return {"encoder_hidden_states": prompt_embeds, "pooled_projections": embeds["pooled_prompt_embeds"],
                "txt_ids": torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=dtype),
                "img_ids": self.pipe._prepare_latent_image_ids(batch, h // 2, w // 2, device, dtype),
                "guidance": guidance}

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return denoiser(hidden_states=x, timestep=t.expand(x.shape[0]).to(x.dtype) / 1000,
                        guidance=cond["guidance"], pooled_projections=cond["pooled_projections"],
                        encoder_hidden_states=cond["encoder_hidden_states"], txt_ids=cond["txt_ids"],
                        img_ids=cond["img_ids"], return_dict=False)[0]
