"""PixArt-alpha and PixArt-sigma: ``PixArtTransformer2DModel`` with a T5 text encoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .base import Conditioning, Embeddings, PipelineFamily, with_negative

__all__ = ["PixArtAlphaFamily", "PixArtSigmaFamily"]


class PixArtAlphaFamily(PipelineFamily):
    """PixArt-alpha: DiT with adaLN-single, attention-masked T5 embeddings and learned variance (its second
    half of output channels is dropped); 1024 px models (``sample_size`` 128) also take the resolution
    and aspect ratio. One-step models (DMD) decode the scheduler's predicted x0, as the pipeline does."""

    pipelines = ("PixArtAlphaPipeline",)
    denoiser_name = "transformer"
    encode_outputs = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                      "negative_prompt_attention_mask")

    micro_conditions_at: ClassVar[int | None] = 128  # the transformer sample_size that takes them
    one_step_decodes_x0: ClassVar[bool] = True

    def call_kwargs(self, embeds: Embeddings) -> dict[str, Any]:
        # __call__'s negative_prompt defaults to "" and may not come with negative embeddings
        return {**embeds, "negative_prompt": None} if "negative_prompt_embeds" in embeds else dict(embeds)

    def conditioning(self, embeds: Embeddings, guidance_scale: float, height: int, width: int) -> Conditioning:
        guidance = self.uses_cfg(guidance_scale)
        text = with_negative(embeds, "prompt_embeds", guidance)
        added: dict[str, torch.Tensor | None] = {"resolution": None, "aspect_ratio": None}
        if self.denoiser.config.sample_size == self.micro_conditions_at:
            added = {"resolution": torch.tensor([[height, width]]).repeat(len(text), 1).to(text),
                     "aspect_ratio": torch.tensor([[float(height / width)]]).repeat(len(text), 1).to(text)}
        return {"encoder_hidden_states": text, "added_cond_kwargs": added,
                "encoder_attention_mask": with_negative(embeds, "prompt_attention_mask", guidance)}

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        out = denoiser(x, encoder_hidden_states=cond["encoder_hidden_states"],
                       encoder_attention_mask=cond["encoder_attention_mask"], timestep=t.expand(x.shape[0]),
                       added_cond_kwargs=cond["added_cond_kwargs"], return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: keep the noise prediction
            out = out.chunk(2, dim=1)[0]
        return out

    def step(self, scheduler: Any, model_output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor,
             step_kwargs: dict[str, Any]) -> torch.Tensor:
        out = scheduler.step(model_output, t, latents, **step_kwargs, return_dict=False)
        return out[1] if self.one_step_decodes_x0 and len(scheduler.timesteps) == 1 else out[0]


class PixArtSigmaFamily(PixArtAlphaFamily):
    """PixArt-sigma: as PixArt-alpha, without micro-conditions and with the plain scheduler step."""

    pipelines = ("PixArtSigmaPipeline",)
    micro_conditions_at = None
    one_step_decodes_x0 = False
