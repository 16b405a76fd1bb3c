"""Backbone factory: a ``BackboneConfig`` in, a frozen ``CLIPBackbone`` out."""
from ..config import BackboneConfig
from .base import CLIPBackbone
from .hf_backbone import HFCLIPBackbone
from .openclip_backbone import OpenCLIPBackbone

BACKENDS = {"open_clip": OpenCLIPBackbone, "transformers": HFCLIPBackbone}


def build_backbone(config: BackboneConfig) -> CLIPBackbone:
    """Build the frozen encoder a config names (downloads only for pretrained tags / hub ids)."""
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[config.backend](config)


__all__ = ["BACKENDS", "CLIPBackbone", "HFCLIPBackbone", "OpenCLIPBackbone", "build_backbone"]
