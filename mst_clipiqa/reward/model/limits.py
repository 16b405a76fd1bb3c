"""Sizes in a model config bounded before anything is built: a ``config.json`` cannot exhaust the machine.

Each size field has a limit far above any CLIP model (ViT-bigG is width 1664, 48 layers), and the parameter
count the sizes imply is estimated and bounded too; when a weight file is present, the sizes must also agree
with its tensor shapes, read from the safetensors header without loading a tensor. Errors name the field,
its value and the limit.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from ..backbones import BackboneConfig
from .files import check_readable

if TYPE_CHECKING:
    from .config import MSTCLIPIQAConfig

MAX_PARAMETERS = 5_000_000_000  # 20 GB in fp32: beyond any CLIP backbone pair
MAX_LEVELS = 1000
MODEL_LIMITS = {"fusion_hidden": 65536, "attention_heads": 1024, "prompt_cache_size": 10_000_000}
# the size keys of open_clip (vision_cfg / text_cfg) and transformers (vision_config / text_config) architectures
ARCH_LIMITS = {
    "embed_dim": 16384, "projection_dim": 16384, "width": 16384, "hidden_size": 16384, "head_width": 16384,
    "intermediate_size": 131072, "mlp_ratio": 64, "layers": 256, "num_hidden_layers": 256, "heads": 1024,
    "num_attention_heads": 1024, "image_size": 4096, "patch_size": 4096, "context_length": 4096,
    "max_position_embeddings": 4096, "vocab_size": 1_000_000,
}
OPEN_CLIP_DEFAULTS = {"vision": {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "mlp_ratio": 4.0},
                      "text": {"context_length": 77, "vocab_size": 49408, "width": 512, "layers": 12,
                               "mlp_ratio": 4.0}}
HF_DEFAULTS = {"vision": {"image_size": 224, "patch_size": 32, "hidden_size": 768, "intermediate_size": 3072,
                          "num_hidden_layers": 12},
               "text": {"max_position_embeddings": 77, "vocab_size": 49408, "hidden_size": 512,
                        "intermediate_size": 2048, "num_hidden_layers": 12}}


def check_config_sizes(config: MSTCLIPIQAConfig) -> None:
    """Every size field within its limit and the implied parameter count under :data:`MAX_PARAMETERS`."""
    for name, limit in MODEL_LIMITS.items():
        _check_limit(name, getattr(config, name), limit)
    if len(config.levels) > MAX_LEVELS:
        raise ValueError(f"config field levels has {len(config.levels)} quality levels, above the limit of "
                         f"{MAX_LEVELS} (each is a text the model encodes when it is built)")
    for which in ("coarse", "fine"):
        _check_arch(which, getattr(config, which).arch or {})
    total = model_parameter_estimate(config)
    if total is not None and total > MAX_PARAMETERS:
        raise ValueError(f"config sizes imply about {total:.3g} parameters, above the limit of {MAX_PARAMETERS:.3g}; "
                         f"backbones: coarse {_describe(config.coarse)}, fine {_describe(config.fine)}, "
                         f"fusion_hidden={config.fusion_hidden}")


def _check_limit(name: str, value: Any, limit: float) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not v <= limit:
            raise ValueError(f"config field {name}={value!r} is above the limit of {limit}")


def _check_arch(which: str, arch: dict[str, Any], prefix: str = "") -> None:
    for key, value in arch.items():
        field = f"{which}.arch.{prefix}{key}"
        if isinstance(value, dict):
            _check_arch(which, value, f"{prefix}{key}.")
        elif key in ARCH_LIMITS:
            _check_limit(field, value, ARCH_LIMITS[key])


def _describe(backbone: BackboneConfig) -> str:
    return f"{backbone.name!r}" + (" (explicit arch)" if backbone.arch else "")


def backbone_parameter_estimate(backbone: BackboneConfig, stored: bool = False) -> int | None:
    """About how many parameters ``backbone``'s explicit ``arch`` builds (None without one: a known model);
    ``stored``: only those kept (open_clip builds a text tower even for ``text=False``, then drops it)."""
    arch = backbone.arch
    if not arch:
        return None
    if backbone.backend == "open_clip":
        vision, text = arch.get("vision_cfg") or {}, arch.get("text_cfg") or {}
        embed = _size(arch.get("embed_dim"), 512)
        towers = [_tower(vision, OPEN_CLIP_DEFAULTS["vision"], "width", "layers", embed, open_clip=True)]
        if backbone.text or not stored:
            towers.append(_tower(text, OPEN_CLIP_DEFAULTS["text"], "width", "layers", embed, open_clip=True))
    else:
        vision, text = arch.get("vision_config") or {}, arch.get("text_config") or {}
        embed = _size(arch.get("projection_dim"), 512)
        towers = [_tower(vision, HF_DEFAULTS["vision"], "hidden_size", "num_hidden_layers", embed)]
        if backbone.text:  # the vision-only transformers model builds no text tower
            towers.append(_tower(text, HF_DEFAULTS["text"], "hidden_size", "num_hidden_layers", embed))
    return sum(towers)


def _size(value: Any, default: float) -> float:
    if isinstance(value, (list, tuple)) and value:
        return float(math.prod(_size(v, default) for v in value)) ** (1 / len(value))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
        else float(default)


def _tower(cfg: dict[str, Any], defaults: dict[str, float], width_key: str, layers_key: str, embed: float,
           open_clip: bool = False) -> int:
    get = {k: _size(cfg.get(k), v) for k, v in defaults.items()}
    width, layers = get[width_key], get[layers_key]
    mlp = get["mlp_ratio"] * width if open_clip else get["intermediate_size"]
    if "vocab_size" in get:
        embeddings = get["vocab_size"] * width + get.get("context_length", get.get("max_position_embeddings", 77)) \
            * width
    else:
        patch = get["patch_size"]
        embeddings = 3 * patch * patch * width + ((get["image_size"] // patch) ** 2 + 1) * width
    return int(embeddings + layers * (4 * width * width + 2 * width * mlp + 9 * width) + width * embed)


def model_parameter_estimate(config: MSTCLIPIQAConfig) -> int | None:
    """About how many parameters ``config`` builds; None when a backbone is a known model (no explicit arch)."""
    backbones = [backbone_parameter_estimate(b) for b in (config.coarse, config.fine)]
    if None in backbones:
        return None
    return sum(backbones) + trained_parameter_estimate(config)


def trained_parameter_estimate(config: MSTCLIPIQAConfig) -> int:
    """About how many parameters the fusion and heads have (coarse width assumed for the fine stream if unknown)."""
    dim = _size((config.coarse.arch or {}).get("embed_dim", (config.coarse.arch or {}).get("projection_dim")), 512)
    fine = _size((config.fine.arch or {}).get("embed_dim", (config.fine.arch or {}).get("projection_dim")), dim)
    fusion = (dim + fine) * config.fusion_hidden + config.fusion_hidden * dim + (dim + fine) * dim
    prompt_heads = sum(kind == "prompt" for kind in config.heads.values())
    return int(fusion + prompt_heads * 8 * dim * dim)


def header_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from a safetensors file's header, without reading a tensor."""
    check_readable(Path(path), "a safetensors weights file")
    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or damaged?): {error}") from error


def check_sizes_against_weights(config: MSTCLIPIQAConfig, weights: Path, backbones: Path | None) -> None:
    """The config's sizes agree with the shapes in its weight files (read from their headers): a config
    edited to absurd sizes is refused before the model is built, naming the field and the file's size."""
    trained = header_shapes(weights)
    hidden = trained.get("fusion.W_h.weight")
    if hidden is not None and hidden[0] != config.fusion_hidden:
        raise ValueError(f"config field fusion_hidden={config.fusion_hidden} does not match {weights}, whose "
                         f"fusion.W_h.weight has shape {list(hidden)} (fusion_hidden {hidden[0]})")
    if backbones is None or not backbones.is_file():
        return
    stored = header_shapes(backbones)
    for which in config.embedded_backbones:
        estimate = backbone_parameter_estimate(getattr(config, which), stored=True)
        held = sum(math.prod(s) for k, s in stored.items() if k.startswith(f"{which}."))
        if estimate is not None and estimate > 2 * held + 1_000_000:
            raise ValueError(f"config field {which}.arch implies about {estimate:.3g} parameters, but {backbones} "
                             f"holds {held:.3g} for the {which} backbone; the config does not belong to these "
                             "weights (edited or damaged?)")
