"""Pipeline families: how the shared denoising loop and best-of-N drive each kind of diffusers pipeline.

Built in: SD 1.x / 2.x and SD-Turbo (``UNetFamily``), SDXL and SDXL-Turbo
(``SDXLFamily``), LCM (``LCMFamily``; a guidance-embedding UNet in the SD or
SDXL pipeline works too), SD3 / SD3.5 (``SD3Family``), FLUX.1 (``FluxFamily``)
and PixArt-alpha / sigma (``PixArtAlphaFamily``, ``PixArtSigmaFamily``). Add
one by subclassing :class:`PipelineFamily` and decorating it with
:func:`register_family` (``docs/pipeline_families.md``).
"""

from .base import Conditioning, Embeddings, PipelineFamily, with_negative
from .flux import FluxFamily
from .pixart import PixArtAlphaFamily, PixArtSigmaFamily
from .registry import find_family, pipeline_family, register_family, registered_families
from .sd3 import SD3Family
from .unet import LCMFamily, SDXLFamily, UNetFamily

for _family in (UNetFamily, SDXLFamily, LCMFamily, SD3Family, FluxFamily, PixArtAlphaFamily, PixArtSigmaFamily):
    register_family(_family)

# The names before the registry (one family per denoiser class).
DenoiserFamily = PipelineFamily
denoiser_family = pipeline_family

__all__ = ["Conditioning", "Embeddings", "PipelineFamily", "with_negative", "FluxFamily", "PixArtAlphaFamily",
           "PixArtSigmaFamily", "find_family", "pipeline_family", "register_family", "registered_families",
           "SD3Family", "LCMFamily", "SDXLFamily", "UNetFamily", "DenoiserFamily", "denoiser_family"]
