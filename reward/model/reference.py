"""Import checkpoints of the reference implementation (transformers module layout).

The architecture is read from tensor shapes, so checkpoints of any size
import; attention heads default to width // 64 (CLIP's head width).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..backbones import BackboneConfig
from .config import MSTCLIPIQAConfig

COARSE, FINE, TEXT = "mstfe.encoder_coarse.", "mstfe.encoder_fine.", "head.text_encoder."
HEAD_KEYS = {"A": ("head.temperature",), "B": ("head.alpha", "head.W_1.weight", "head.w_o.weight")}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A raw state dict or one under ``model_state_dict``; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return normalize_layout(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (raw, or under 'model_state_dict')")
    return normalize_layout(state)


def normalize_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 dropped the ``text_model.`` level inside ``CLIPTextModel``: bring both layouts to 4.x's;
    drop the ``module.`` prefix of DataParallel / DDP checkpoints."""
    def fix(key: str) -> str:
        key = key.removeprefix("module.")  # saved from a DataParallel / DDP wrapper
        if key.startswith(TEXT) and not key.startswith((TEXT + "text_model.", TEXT + "text_projection")):
            return TEXT + "text_model." + key[len(TEXT):]
        return key

    return {fix(k): v for k, v in state.items()}


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    for variant, keys in HEAD_KEYS.items():
        if all(k in state for k in keys):
            return variant
    raise ValueError("not an MST-CLIPIQA reference checkpoint: expected 'head.temperature' (variant A) or "
                     "'head.alpha', 'head.W_1.*', 'head.w_o.*' (variant B)")


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    if not found:
        raise ValueError(f"checkpoint has no transformer layers under {prefix!r}")
    return max(found) + 1


def _vision_arch(state: dict[str, torch.Tensor], prefix: str, heads: int | None) -> dict[str, Any]:
    p = prefix + "vision_model."
    patch = state[p + "embeddings.patch_embedding.weight"]
    positions = state[p + "embeddings.position_embedding.weight"].shape[0]
    width = patch.shape[0]
    return {"image_size": patch.shape[-1] * round((positions - 1) ** 0.5), "patch_size": patch.shape[-1],
            "hidden_size": width, "intermediate_size": state[p + "encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": _layers(state, p), "num_attention_heads": heads or width // 64,
            "hidden_act": "quick_gelu"}


def _text_arch(state: dict[str, torch.Tensor], heads: int | None) -> dict[str, Any]:
    p = TEXT + "text_model."
    tokens = state[p + "embeddings.token_embedding.weight"]
    return {"vocab_size": tokens.shape[0], "hidden_size": tokens.shape[1],
            "max_position_embeddings": state[p + "embeddings.position_embedding.weight"].shape[0],
            "intermediate_size": state[p + "encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": _layers(state, p), "num_attention_heads": heads or tokens.shape[1] // 64,
            "hidden_act": "quick_gelu"}


def _heads_from(config: MSTCLIPIQAConfig | None, which: str, tower: str) -> int | None:
    arch = getattr(config, which).arch if config is not None else None
    return ((arch or {}).get(tower) or {}).get("num_attention_heads")


def reference_config(state: dict[str, torch.Tensor], config: MSTCLIPIQAConfig | None = None) -> MSTCLIPIQAConfig:
    """Our config for a reference checkpoint.

    ``config`` may supply attention-head counts, the output name, the templates and
    the score range; the backbones always keep the checkpoint's own (imported) weights.
    """
    kind = "template" if detect_variant(state) == "A" else "prompt"
    projection = state[COARSE + "visual_projection.weight"].shape[0]
    archs = {
        which: {"projection_dim": projection,
                "vision_config": _vision_arch(state, prefix, _heads_from(config, which, "vision_config")),
                "text_config": _text_arch(state, _heads_from(config, "coarse", "text_config"))}
        for which, prefix in (("coarse", COARSE), ("fine", FINE))
    }
    base = config or MSTCLIPIQAConfig.paper("A", pretrained=False, backend="transformers")
    output = next(iter(base.heads))
    same_kind = base.heads[output] == kind
    return MSTCLIPIQAConfig(
        coarse=BackboneConfig("transformers", "official-coarse", None, archs["coarse"]),
        fine=BackboneConfig("transformers", "official-fine", None, archs["fine"], text=False),
        heads={output: kind},
        score_ranges={output: base.score_ranges[output]} if same_kind else {},
        fusion_hidden=state["gff.W_h.weight"].shape[0], template=base.template, levels=base.levels,
        attention_heads=base.attention_heads, init="random",
    )


def convert_state_dict(state: dict[str, torch.Tensor], output: str) -> dict[str, torch.Tensor]:
    """Rename reference keys to ours; drop buffers we derive (position ids, quality levels)."""
    rules = [(COARSE, "coarse.model."), (FINE, "fine.model."), (TEXT, "coarse.model."), ("gff.", "fusion."),
             ("head.", f"heads.{output}.")]
    converted, unknown = {}, []
    for key, value in state.items():
        if key.endswith("position_ids") or key in ("head.quality_scores", "head.text_features"):
            continue
        rule = next(((o, n) for o, n in rules if key.startswith(o)), None)
        if rule is None:
            unknown.append(key)
            continue
        converted[rule[1] + key[len(rule[0]):]] = value
    if unknown:
        raise ValueError(f"checkpoint keys outside the reference layout: {unknown[:5]}; expected keys under "
                         "mstfe., gff. and head.")
    return converted
