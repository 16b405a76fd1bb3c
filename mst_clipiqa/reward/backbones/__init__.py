"""Frozen CLIP encoders, knowing nothing of MST-CLIPIQA: a ``BackboneConfig`` in, a ``CLIPBackbone`` out.

Each backbone says what its images must look like (``image_spec``) and
``preprocess`` gets them there differentiably. Add a backend by subclassing
``CLIPBackbone`` and registering it in ``BACKENDS``.
"""
from .base import CLIPBackbone
from .config import BackboneConfig, Backend
from .open_clip_backend import OpenCLIPBackbone
from .preprocess import ImageSpec, fit_to_size, preprocess
from .tokenizer import openai_clip_tokenizer
from .transformers_backend import HFCLIPBackbone

BACKENDS = {"open_clip": OpenCLIPBackbone, "transformers": HFCLIPBackbone}


def build_backbone(config: BackboneConfig) -> CLIPBackbone:
    """Build the frozen encoder a config names (downloads only for pretrained tags / hub ids)."""
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[config.backend](config)


__all__ = ["BACKENDS", "Backend", "BackboneConfig", "CLIPBackbone", "HFCLIPBackbone", "ImageSpec",
           "OpenCLIPBackbone", "build_backbone", "fit_to_size", "openai_clip_tokenizer", "preprocess"]
