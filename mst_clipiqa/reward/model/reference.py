"""Import checkpoints of the reference implementation (transformers module layout).

The architecture is read from tensor shapes, so checkpoints of any size
import; attention heads default to width // 64 (CLIP's head width).
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..backbones import BackboneConfig
from .config import MSTCLIPIQAConfig
from .files import check_finite, check_readable, read_weights

COARSE, FINE, TEXT = "mstfe.encoder_coarse.", "mstfe.encoder_fine.", "head.text_encoder."
HEAD_KEYS = {"A": ("head.temperature",), "B": ("head.alpha", "head.W_1.weight", "head.w_o.weight")}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A raw state dict or one under ``model_state_dict``; never unpickles arbitrary objects.

    A missing, empty, truncated or non-finite file is a ``ValueError`` naming it.
    """
    path = Path(path)
    check_readable(path, "a reference checkpoint (.pth or .safetensors)")
    if path.suffix == ".safetensors":
        return normalize_layout(read_weights(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path} cannot be read as a weights-only PyTorch checkpoint (truncated, damaged, or "
                         f"holding objects other than tensors): {error}") from error
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (raw, or under 'model_state_dict')")
    check_finite(state, path)
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


def _tensor(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"reference checkpoint lacks {key!r}, needed to read the architecture; expected the "
                         "full reference layout (mstfe.encoder_coarse., mstfe.encoder_fine., head.text_encoder., "
                         "gff., head.)")
    return state[key]


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    if not found:
        raise ValueError(f"checkpoint has no transformer layers under {prefix!r}")
    gaps = sorted(set(range(max(found) + 1)) - found)
    if gaps:
        raise ValueError(f"checkpoint lacks whole transformer layers {gaps} under {prefix!r} "
                         f"(it has layers up to {max(found)})")
    return max(found) + 1


def _encoder_arch(state: dict[str, torch.Tensor], p: str, width: int, heads: int | None) -> dict[str, Any]:
    layers = _layers(state, p)
    return {"hidden_size": width, "intermediate_size": _tensor(state, p + "encoder.layers.0.mlp.fc1.weight").shape[0],
            "num_hidden_layers": layers, "num_attention_heads": heads or width // 64, "hidden_act": "quick_gelu"}


def _vision_arch(state: dict[str, torch.Tensor], prefix: str, heads: int | None) -> dict[str, Any]:
    p = prefix + "vision_model."
    patch = _tensor(state, p + "embeddings.patch_embedding.weight")
    positions = _tensor(state, p + "embeddings.position_embedding.weight").shape[0]
    return {"image_size": patch.shape[-1] * round((positions - 1) ** 0.5), "patch_size": patch.shape[-1],
            **_encoder_arch(state, p, patch.shape[0], heads)}


def _text_arch(state: dict[str, torch.Tensor], heads: int | None) -> dict[str, Any]:
    p = TEXT + "text_model."
    tokens = _tensor(state, p + "embeddings.token_embedding.weight")
    return {"vocab_size": tokens.shape[0],
            "max_position_embeddings": _tensor(state, p + "embeddings.position_embedding.weight").shape[0],
            **_encoder_arch(state, p, tokens.shape[1], heads)}


def _warn_unequal_depths(archs: dict[str, dict[str, Any]]) -> None:
    """The reference's three towers are CLIP ViT-B's, equally deep: a checkpoint that lacks its last layers
    imports as a shallower encoder, which no missing key reveals."""
    depths = {"coarse vision": archs["coarse"]["vision_config"]["num_hidden_layers"],
              "fine vision": archs["fine"]["vision_config"]["num_hidden_layers"],
              "text": archs["coarse"]["text_config"]["num_hidden_layers"]}
    if len(set(depths.values())) > 1:
        warnings.warn(f"the checkpoint's encoders have unequal depths {depths}; the reference uses equally deep "
                      "CLIP towers, so this file may lack the last layers of the shallower one", stacklevel=4)


def _heads_from(config: MSTCLIPIQAConfig | None, which: str, tower: str) -> int | None:
    arch = getattr(config, which).arch if config is not None else None
    return ((arch or {}).get(tower) or {}).get("num_attention_heads")


def reference_config(state: dict[str, torch.Tensor], config: MSTCLIPIQAConfig | None = None) -> MSTCLIPIQAConfig:
    """Our config for a reference checkpoint.

    ``config`` may supply attention-head counts, the output name, the templates and
    the score range; the backbones always keep the checkpoint's own (imported) weights.
    """
    kind = "template" if detect_variant(state) == "A" else "prompt"
    projection = _tensor(state, COARSE + "visual_projection.weight").shape[0]
    archs = {
        which: {"projection_dim": projection,
                "vision_config": _vision_arch(state, prefix, _heads_from(config, which, "vision_config")),
                "text_config": _text_arch(state, _heads_from(config, "coarse", "text_config"))}
        for which, prefix in (("coarse", COARSE), ("fine", FINE))
    }
    _warn_unequal_depths(archs)
    base = config or MSTCLIPIQAConfig.paper("A", pretrained=False, backend="transformers")
    output = next(iter(base.heads))
    same_kind = base.heads[output] == kind
    return MSTCLIPIQAConfig(
        coarse=BackboneConfig("transformers", "official-coarse", None, archs["coarse"]),
        fine=BackboneConfig("transformers", "official-fine", None, archs["fine"], text=False),
        heads={output: kind},
        score_ranges={output: base.score_ranges[output]} if same_kind else {},
        fusion_hidden=_tensor(state, "gff.W_h.weight").shape[0], template=base.template, levels=base.levels,
        attention_heads=base.attention_heads, init="random",
    )


def convert_state_dict(state: dict[str, torch.Tensor], output: str) -> dict[str, torch.Tensor]:
    """Rename reference keys to ours; drop buffers we derive (position ids, quality levels)."""
    converted, unknown = {}, []
    for key, value in state.items():
        if key.endswith("position_ids") or key in ("head.quality_scores", "head.text_features"):
            continue
        rule = next(((o, n) for o, n in _renames(output) if key.startswith(o)), None)
        if rule is None:
            unknown.append(key)
            continue
        converted[rule[1] + key[len(rule[0]):]] = value
    if unknown:
        raise ValueError(f"checkpoint keys outside the reference layout: {unknown[:5]}; expected keys under "
                         "mstfe., gff. and head.")
    return converted


def add_unscored(converted: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], template_head: bool
                 ) -> dict[str, torch.Tensor]:
    """Keep our initial values for the tensors of transformers' ``CLIPModel`` that the reference layout lacks
    and no score reads: the contrastive ``logit_scale`` and, without a template head, the text projection
    (the prompt head reads token states). Every other tensor must come from the checkpoint."""
    unscored = ["coarse.model.logit_scale"] + ([] if template_head else ["coarse.model.text_projection.weight"])
    return {**{k: ours[k] for k in unscored if k in ours}, **converted}


def reference_key(key: str) -> str:
    """Our state-dict key spelled as the reference checkpoint spells it (to name what a checkpoint lacks)."""
    if key.startswith(("coarse.model.text_model.", "coarse.model.text_projection")):
        return TEXT + key[len("coarse.model."):]
    if key.startswith("heads."):
        return "head." + key.split(".", 2)[2]
    return next((old + key[len(new):] for old, new in _renames("") if key.startswith(new)), key)


def _renames(output: str) -> list[tuple[str, str]]:
    return [(COARSE, "coarse.model."), (FINE, "fine.model."), (TEXT, "coarse.model."), ("gff.", "fusion."),
            ("head.", f"heads.{output}.")]
