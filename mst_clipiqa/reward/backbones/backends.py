"""The backends by name: ``BackboneConfig.backend`` -> the encoder class that builds it."""
from .base import CLIPBackbone
from .config import BackboneConfig
from .open_clip_backend import OpenCLIPBackbone
from .transformers_backend import HFCLIPBackbone

BACKENDS = {"open_clip": OpenCLIPBackbone, "transformers": HFCLIPBackbone}


def build_backbone(config: BackboneConfig) -> CLIPBackbone:
    """Build the frozen encoder a config names (downloads only for pretrained tags / hub ids)."""
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[config.backend](config)
