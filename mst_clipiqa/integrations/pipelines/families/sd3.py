"""SD3 / SD3.5: ``SD3Transformer2DModel`` with a flow-matching scheduler."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Conditioning, Embeddings, PipelineFamily, with_negative

__all__ = ["SD3Family"]


class SD3Family(PipelineFamily):
    """SD3 / SD3.5: MMDiT transformer with pooled projections, flow matching (with dynamic shifting if the
    scheduler asks for it)."""

    pipelines = ("StableDiffusion3Pipeline",)
    denoiser_name = "transformer"
    encode_outputs = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                      "negative_pooled_prompt_embeds")

    def conditioning(self, embeds: Embeddings, guidance_scale: float, height: int, width: int) -> Conditioning:
        guidance = self.uses_cfg(guidance_scale)
        return {"encoder_hidden_states": with_negative(embeds, "prompt_embeds", guidance),
                "pooled_projections": with_negative(embeds, "pooled_prompt_embeds", guidance)}

    def set_timesteps(self, scheduler: Any, num_steps: int, shape: tuple[int, ...], device: torch.device) -> None:
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            patch = int(self.denoiser.config.patch_size)
            cfg = scheduler.config
            kwargs["mu"] = calculate_shift((shape[-2] // patch) * (shape[-1] // patch),
                                           cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                                           cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))
        scheduler.set_timesteps(num_steps, device=device, **kwargs)

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return denoiser(hidden_states=x, timestep=t.expand(x.shape[0]),
                        encoder_hidden_states=cond["encoder_hidden_states"],
                        pooled_projections=cond["pooled_projections"], return_dict=False)[0]
