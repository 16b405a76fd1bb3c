"""Built-in model names: ``tiny``, ``tiny-hf`` (offline, random) and ``paper-A``, ``paper-B`` (OpenAI CLIP)."""
from __future__ import annotations

from collections.abc import Sequence

from .config import VARIANT_HEADS, MSTCLIPIQAConfig

MODEL_NAMES = ("tiny", "tiny-hf", "paper-A", "paper-B")


def _variants(variant: str | Sequence[str] | None) -> list[str]:
    if variant is None:
        return []
    parts = variant.split(",") if isinstance(variant, str) else list(variant)
    return [part.strip() for part in parts if part.strip()]


def _heads(outputs: Sequence[str] | None, variant: str | Sequence[str] | None, default: str) -> dict[str, str]:
    outputs = list(outputs or ["quality"])
    variants = _variants(variant) or [default]
    if len(variants) == 1:
        variants = variants * len(outputs)
    if len(variants) != len(outputs) or any(v not in VARIANT_HEADS for v in variants):
        raise ValueError(f"variant {variant!r}: expected A or B, or one of them per output {outputs}")
    return {o: VARIANT_HEADS[v] for o, v in zip(outputs, variants)}


def named_config(name: str, variant: str | Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None) -> MSTCLIPIQAConfig:
    """The config of a built-in model; ``variant`` (A / B, or one per output) and ``outputs`` shape its heads."""
    if name in ("tiny", "tiny-hf"):
        backend = "transformers" if name == "tiny-hf" else "open_clip"
        return MSTCLIPIQAConfig.tiny(heads=_heads(outputs, variant, "A"), backend=backend)
    if name in ("paper-A", "paper-B"):
        if variant and set(_variants(variant)) != {name[-1]}:
            raise ValueError(f"{name} is variant {name[-1]}; drop variant={variant!r} or pick the other model")
        return MSTCLIPIQAConfig.paper(heads=_heads(outputs, None, name[-1]))
    raise ValueError(f"unknown model name {name!r}; expected one of {list(MODEL_NAMES)}")
