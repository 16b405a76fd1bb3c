"""Built-in model names: ``tiny``, ``tiny-hf`` (offline, random) and ``paper-A``, ``paper-B`` (OpenAI CLIP), each
a JSON file in ``model_configs/``; :func:`add_model_config` registers more."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from .config import VARIANT_HEADS, MSTCLIPIQAConfig
from .heads import HEAD_KINDS
from .model_configs import model_config_names, model_spec


class _ModelNames(Sequence):
    """The registered model names, read when used (so names added later count)."""

    def __getitem__(self, index):  # type: ignore[override]
        return model_config_names()[index]

    def __len__(self) -> int:
        return len(model_config_names())

    def __iter__(self) -> Iterator[str]:
        return iter(model_config_names())

    def __repr__(self) -> str:
        return repr(model_config_names())


MODEL_NAMES = _ModelNames()


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
    if len(variants) != len(outputs) or any(v not in VARIANT_HEADS and v not in HEAD_KINDS for v in variants):
        raise ValueError(f"variant {variant!r}: expected A or B (or a head kind: {sorted(HEAD_KINDS)}), or one of "
                         f"them per output {outputs}")
    return {o: VARIANT_HEADS.get(v, v) for o, v in zip(outputs, variants)}


def named_config(name: str, variant: str | Sequence[str] | None = None,
                 outputs: Sequence[str] | None = None) -> MSTCLIPIQAConfig:
    """The config of a registered model name; ``variant`` (A / B, or one per output) and ``outputs`` shape its
    heads."""
    spec = model_spec(name)
    if spec["variant_fixed"]:
        if variant and set(_variants(variant)) != {spec["variant"]}:
            raise ValueError(f"{name} is variant {spec['variant']}; drop variant={variant!r} or pick another model")
        variant = None
    return MSTCLIPIQAConfig(**spec["config"], heads=_heads(outputs, variant, spec["variant"]))
