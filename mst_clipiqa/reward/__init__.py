"""MST-CLIPIQA: a differentiable image-quality reward for diffusion models.

    from mst_clipiqa.reward import MSTCLIPIQAReward
    reward = MSTCLIPIQAReward.from_pretrained("tiny")   # or paper-A, a folder, a Hub id
    loss = reward.loss(images, prompts)                 # images (B, 3, H, W) in [0, 1]

Layers, each importing only those below it: ``utils`` -> ``backbones`` (frozen CLIP encoders and their
preprocessing) -> ``model`` (config, fusion, heads, save / load, adapters) -> ``scoring`` (the reward and
the one batched scoring loop) -> ``datasets`` -> ``training``. This module re-exports the public API.
"""
from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .backbones import BackboneConfig, ImageSpec, openai_clip_tokenizer, preprocess
    from .model import (
        MODEL_NAMES,
        MSTCLIPIQA,
        MSTCLIPIQAConfig,
        active_adapter,
        adapter_names,
        add_adapter,
        add_model_config,
        load_adapter,
        load_model,
        merge_adapters,
        save_adapter,
        set_adapter,
    )
    from .model.mstclipiqa import from_official_checkpoint, from_pretrained
    from .scoring import (
        IMAGE_SUFFIXES,
        MSTCLIPIQAReward,
        ScoresWithUncertainty,
        as_image_list,
        collect_images,
        load_image,
        score_in_batches,
        straight_through_clamp,
    )

__all__ = ["IMAGE_SUFFIXES", "MODEL_NAMES", "BackboneConfig", "ImageSpec", "MSTCLIPIQA", "MSTCLIPIQAConfig",
           "MSTCLIPIQAReward", "ScoresWithUncertainty", "active_adapter", "adapter_names", "add_adapter",
           "add_model_config", "as_image_list", "collect_images", "from_official_checkpoint", "from_pretrained",
           "load_adapter", "load_image", "load_model", "merge_adapters", "openai_clip_tokenizer", "preprocess",
           "save_adapter", "score_in_batches", "set_adapter", "straight_through_clamp"]

load_lazily(__name__)
