"""An exactly invertible tiny autoencoder, for tests of methods that train on images.

The tiny pipelines' random ``AutoencoderKL`` is no autoencoder: its encoder does not invert its decoder
(the latents of a decoded image correlate about 0.03 with the latents it came from) and its posterior
noise is as large as its mean. Anything that trains the denoiser on encoded images (Diffusion-DPO,
supervised fine-tuning) then learns nothing about the images the pipeline makes. This one decodes by a
fixed linear map and a pixel shuffle and encodes by the map's pseudo-inverse, so ``encode(decode(z)) = z``
(up to clamping and 8-bit rounding of the images).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["LinearAutoencoder", "with_linear_autoencoder"]


class LinearAutoencoder(ModelMixin, ConfigMixin):
    """``AutoencoderKL``'s interface (``encode(x).latent_dist``, ``decode(z).sample``, ``config``) on a linear
    map from ``latent_channels`` to ``3 * factor**2`` values per latent pixel, pixel-shuffled by ``factor``;
    the posterior has (almost) no noise. ``block_out_channels`` only sets the pipelines' ``vae_scale_factor``
    (``2 ** (len - 1)``, which must equal ``factor``)."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, factor: int = 2, scale: float = 0.05,
                 block_out_channels: tuple[int, ...] = (8, 16), scaling_factor: float = 1.0,
                 shift_factor: float = 0.0, force_upcast: bool = False, seed: int = 0):
        super().__init__()
        weight = torch.randn(3 * factor**2, latent_channels, generator=torch.Generator().manual_seed(seed)) * scale
        self.weight = nn.Parameter(weight, requires_grad=False)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        cells = F.pixel_unshuffle(x, self.config.factor)
        mean = torch.einsum("lc,bchw->blhw", torch.linalg.pinv(self.weight.float()).to(x), cells)
        posterior = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, -30.0)], dim=1))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator: Any = None) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        cells = torch.einsum("cl,blhw->bchw", self.weight.to(z), z)
        image = F.pixel_shuffle(cells, self.config.factor)
        return DecoderOutput(sample=image) if return_dict else (image,)


def with_linear_autoencoder(pipe: Any, seed: int = 0) -> Any:
    """``pipe`` (a tiny pipeline) with its VAE replaced by a :class:`LinearAutoencoder` of the same latent
    channels and scale factor, on the same device; returned for chaining."""
    vae = pipe.vae
    factor = int(pipe.vae_scale_factor)
    pipe.vae = LinearAutoencoder(latent_channels=int(vae.config.latent_channels), factor=factor,
                                 block_out_channels=tuple(vae.config.block_out_channels), seed=seed
                                 ).to(vae.device).eval()
    return pipe
