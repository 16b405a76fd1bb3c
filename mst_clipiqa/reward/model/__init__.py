"""The MST-CLIPIQA model: config, gated fusion, heads, save / load, reference checkpoints, LoRA adapters."""
from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .adapters import (
        active_adapter,
        adapter_names,
        add_adapter,
        has_encoder_adapter,
        load_adapter,
        merge_adapters,
        save_adapter,
        set_adapter,
        trainable_state_dict,
    )
    from .checks import check_image_shape, check_prompts
    from .config import FUSION_INITS, HEAD_RANGES, VARIANT_HEADS, MSTCLIPIQAConfig
    from .ensemble import set_ensemble
    from .heads import HEAD_KINDS, HeadSpec, register_head_kind
    from .loading import load_model
    from .model_configs import add_model_config
    from .mstclipiqa import BACKBONE_PREFIXES, MSTCLIPIQA, is_adapter_key, pad_states
    from .names import MODEL_NAMES

__all__ = ["BACKBONE_PREFIXES", "FUSION_INITS", "HEAD_KINDS", "HEAD_RANGES", "HeadSpec", "MODEL_NAMES", "MSTCLIPIQA",
           "MSTCLIPIQAConfig", "VARIANT_HEADS", "active_adapter", "adapter_names", "add_adapter", "add_model_config",
           "check_image_shape", "check_prompts", "has_encoder_adapter", "is_adapter_key", "load_adapter", "load_model",
           "merge_adapters", "pad_states", "register_head_kind", "save_adapter", "set_adapter", "set_ensemble",
           "trainable_state_dict"]

load_lazily(__name__)
