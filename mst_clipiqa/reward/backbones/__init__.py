"""Frozen CLIP encoders, knowing nothing of MST-CLIPIQA: a ``BackboneConfig`` in, a ``CLIPBackbone`` out.

Each backbone says what its images must look like (``image_spec``) and
``preprocess`` gets them there differentiably. Add a backend by subclassing
``CLIPBackbone`` and registering it in ``BACKENDS`` (:mod:`.backends`).
"""
from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .backends import BACKENDS, build_backbone
    from .base import CLIPBackbone
    from .config import BackboneConfig, Backend
    from .open_clip_backend import OpenCLIPBackbone
    from .preprocess import ImageSpec, fit_to_size, preprocess
    from .tokenizer import openai_clip_tokenizer
    from .transformers_backend import HFCLIPBackbone

__all__ = ["BACKENDS", "Backend", "BackboneConfig", "CLIPBackbone", "HFCLIPBackbone", "ImageSpec",
           "OpenCLIPBackbone", "build_backbone", "fit_to_size", "openai_clip_tokenizer", "preprocess"]

load_lazily(__name__)
