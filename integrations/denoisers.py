"""How to call each family of diffusers denoisers, so one sampling loop covers them.

A family knows a pipeline's conditioning (prompt embeddings, SDXL's
text-time ids, SD3's pooled projections), its initial latents and timesteps,
and its denoiser's call signature. Covered:

* ``UNetFamily``: ``UNet2DConditionModel`` pipelines, SD 1.x/2.x (epsilon or
  v-prediction) and SDXL (text-time conditioning), with any scheduler whose
  ``step`` is a torch function of its inputs (DDIM, Euler, DDPM, ...).
* ``SD3Family``: ``SD3Transformer2DModel`` with a flow-matching scheduler.
* ``FluxFamily``: ``FluxTransformer2DModel`` (FLUX.1, packed latents, guidance
  embedding) with a flow-matching scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .prompts import encode_prompt

__all__ = ["DenoiserFamily", "UNetFamily", "SD3Family", "FluxFamily", "denoiser_family"]

Conditioning = dict[str, Any]


class DenoiserFamily:
    """Base class: pipeline-specific pieces of the denoising loop."""

    denoiser_name = "unet"

    def __init__(self, pipe: Any):
        self.pipe = pipe

    @property
    def denoiser(self) -> nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    def default_size(self) -> tuple[int, int]:
        side = int(self.denoiser.config.sample_size) * int(self.pipe.vae_scale_factor)
        return side, side

    def check_size(self, height: int, width: int) -> None:
        multiple = int(self.pipe.vae_scale_factor) * self._latent_multiple()
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} for this pipeline, "
                             f"got {height}x{width}")

    def _latent_multiple(self) -> int:
        return 1

    def encode(
        self, prompts: list[str], *, guidance: bool, negative_prompt: str | None = None, **encode_kwargs: Any
    ) -> dict[str, torch.Tensor]:
        negative = [negative_prompt] * len(prompts) if guidance and negative_prompt is not None else None
        return encode_prompt(self.pipe, prompts, do_classifier_free_guidance=guidance,
                             negative_prompt=negative, **encode_kwargs)

    def uses_cfg(self, guidance_scale: float) -> bool:
        """Whether ``guidance_scale`` means classifier-free guidance (two predictions per step)."""
        return guidance_scale > 1.0

    def conditioning(self, embeds: dict[str, torch.Tensor], guidance_scale: float, height: int,
                     width: int) -> Conditioning:
        """Denoiser inputs that stay fixed along the trajectory (unconditional half first under CFG)."""
        raise NotImplementedError

    def pack(self, noise: torch.Tensor) -> torch.Tensor:
        """Initial noise, drawn in the VAE's latent layout, in the denoiser's layout."""
        return noise

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        factor = int(self.pipe.vae_scale_factor)
        return batch, int(self.denoiser.config.in_channels), height // factor, width // factor

    def set_timesteps(self, scheduler: Any, num_steps: int, shape: tuple[int, ...], device: torch.device) -> None:
        scheduler.set_timesteps(num_steps, device=device)

    def prepare(
        self, scheduler: Any, seeds: Sequence[int], height: int, width: int, num_steps: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator]]:
        """Set the scheduler's timesteps and draw the initial latents, one CPU generator per seed,
        exactly as the pipeline does for ``generator=[torch.Generator().manual_seed(s) for s in seeds]``.

        Returns (latents, timesteps, generators); the generators carry on into
        stochastic scheduler steps, as in the pipeline.
        """
        from diffusers.utils.torch_utils import randn_tensor

        self.check_size(height, width)
        device = self.pipe._execution_device
        shape = self.latent_shape(len(seeds), height, width)
        self.set_timesteps(scheduler, num_steps, shape, device)
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        noise = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
        return self.pack(noise) * getattr(scheduler, "init_noise_sigma", 1.0), scheduler.timesteps, generators

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def vae_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents as the VAE expects them (still in denoiser scaling)."""
        return latents


def _with_negative(embeds: dict[str, torch.Tensor], name: str, guidance: bool) -> torch.Tensor:
    # Unconditional half first, as the pipelines order it.
    return torch.cat([embeds[f"negative_{name}"], embeds[name]]) if guidance else embeds[name]


class UNetFamily(DenoiserFamily):
    """SD 1.x / 2.x and SDXL: ``UNet2DConditionModel`` (SDXL adds text-time conditioning)."""

    def conditioning(self, embeds: dict[str, torch.Tensor], guidance_scale: float, height: int,
                     width: int) -> Conditioning:
        guidance = self.uses_cfg(guidance_scale)
        cond: Conditioning = {"encoder_hidden_states": _with_negative(embeds, "prompt_embeds", guidance)}
        if "pooled_prompt_embeds" in embeds:
            pooled = _with_negative(embeds, "pooled_prompt_embeds", guidance)
            # original size, crop top-left, target size (SDXL micro-conditioning)
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=pooled.dtype, device=pooled.device)
            cond["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(pooled), 1)}
        return cond

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return denoiser(x, t, encoder_hidden_states=cond["encoder_hidden_states"],
                        added_cond_kwargs=cond.get("added_cond_kwargs"), return_dict=False)[0]


class SD3Family(DenoiserFamily):
    """SD3 / SD3.5: ``SD3Transformer2DModel`` with a flow-matching scheduler."""

    denoiser_name = "transformer"

    def _latent_multiple(self) -> int:
        return int(self.denoiser.config.patch_size)

    def conditioning(self, embeds: dict[str, torch.Tensor], guidance_scale: float, height: int,
                     width: int) -> Conditioning:
        guidance = self.uses_cfg(guidance_scale)
        return {"encoder_hidden_states": _with_negative(embeds, "prompt_embeds", guidance),
                "pooled_projections": _with_negative(embeds, "pooled_prompt_embeds", guidance)}

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


class FluxFamily(DenoiserFamily):
    """FLUX.1: ``FluxTransformer2DModel`` on packed 2x2 latent patches with a flow-matching scheduler.

    ``guidance_scale`` feeds the guidance embedding of guidance-distilled
    models (FLUX.1-dev), as the pipeline does; no classifier-free guidance.
    """

    denoiser_name = "transformer"

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

    def conditioning(self, embeds: dict[str, torch.Tensor], guidance_scale: float, height: int,
                     width: int) -> Conditioning:
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


_FAMILIES = {"UNet2DConditionModel": UNetFamily, "SD3Transformer2DModel": SD3Family,
             "FluxTransformer2DModel": FluxFamily}


def denoiser_family(pipe: Any) -> DenoiserFamily:
    """The family adapter for ``pipe``'s denoiser; ValueError for an unsupported one."""
    for attr in ("unet", "transformer"):
        module = getattr(pipe, attr, None)
        if module is None:
            continue
        for cls in type(module).__mro__:
            if cls.__name__ in _FAMILIES:
                return _FAMILIES[cls.__name__](pipe)
        raise ValueError(f"{type(pipe).__name__}.{attr} is a {type(module).__name__}; reward fine-tuning "
                         f"supports denoisers {sorted(_FAMILIES)}")
    raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer to fine-tune")
