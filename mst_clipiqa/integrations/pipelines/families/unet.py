"""UNet pipelines: SD 1.x / 2.x, SDXL, and the guidance-distilled ones (LCM)."""

from __future__ import annotations

import torch
from torch import nn

from .base import Conditioning, Embeddings, PipelineFamily, with_negative

__all__ = ["UNetFamily", "SDXLFamily", "LCMFamily"]


class UNetFamily(PipelineFamily):
    """SD 1.x / 2.x (epsilon or v-prediction; SD-Turbo with ``guidance_scale=0``): ``UNet2DConditionModel``
    with any scheduler whose ``step`` is a torch function of its inputs (DDIM, Euler, DPM-Solver, LCM, ...).

    A UNet with a guidance embedding (``time_cond_proj_dim``, LCM-distilled)
    takes the guidance scale as an input instead of classifier-free guidance.
    """

    pipelines = ("StableDiffusionPipeline",)

    def uses_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale > 1.0 and self.denoiser.config.time_cond_proj_dim is None

    def conditioning(self, embeds: Embeddings, guidance_scale: float, height: int, width: int) -> Conditioning:
        text = with_negative(embeds, "prompt_embeds", self.uses_cfg(guidance_scale))
        cond: Conditioning = {"encoder_hidden_states": text}
        dim = self.denoiser.config.time_cond_proj_dim
        if dim is not None:  # w - 1, embedded as the pipelines do
            w = torch.full((len(text),), float(guidance_scale) - 1.0)
            cond["timestep_cond"] = self.pipe.get_guidance_scale_embedding(w, embedding_dim=dim).to(text)
        return cond

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return denoiser(x, t, encoder_hidden_states=cond["encoder_hidden_states"],
                        timestep_cond=cond.get("timestep_cond"), added_cond_kwargs=cond.get("added_cond_kwargs"),
                        return_dict=False)[0]


class SDXLFamily(UNetFamily):
    """SDXL (and SDXL-Turbo, LCM-SDXL): two text encoders, pooled embeddings and text-time conditioning."""

    pipelines = ("StableDiffusionXLPipeline",)
    encode_outputs = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                      "negative_pooled_prompt_embeds")

    def conditioning(self, embeds: Embeddings, guidance_scale: float, height: int, width: int) -> Conditioning:
        cond = super().conditioning(embeds, guidance_scale, height, width)
        pooled = with_negative(embeds, "pooled_prompt_embeds", self.uses_cfg(guidance_scale))
        # original size, crop top-left, target size (SDXL micro-conditioning)
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=pooled.dtype, device=pooled.device)
        cond["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(pooled), 1)}
        return cond


class LCMFamily(UNetFamily):
    """``LatentConsistencyModelPipeline``: an LCM-distilled SD UNet whose guidance scale enters through its
    time-conditioned guidance embedding; one prediction per step, no negative prompt."""

    pipelines = ("LatentConsistencyModelPipeline",)
