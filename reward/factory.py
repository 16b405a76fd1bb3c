"""A small factory that turns a name into a model: ``tiny``, ``tiny-hf``, ``paper-A``, ``paper-B``, or a saved one."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .config import VARIANT_HEADS, MSTCLIPIQAConfig
from .model import MSTCLIPIQA
from .training.lora import load_adapter

MODEL_NAMES = ("tiny", "tiny-hf", "paper-A", "paper-B")


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one; anything else is a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def split_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; ``None`` stays ``None``."""
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _heads(outputs: list[str] | None, variant: str | None) -> dict[str, str]:
    outputs = outputs or ["quality"]
    variants = split_list(variant) or ["A"]
    if len(variants) == 1:
        variants = variants * len(outputs)
    if len(variants) != len(outputs) or any(v not in VARIANT_HEADS for v in variants):
        raise ValueError(f"--variant {variant!r}: expected A or B, or one of them per output {outputs}")
    return {o: VARIANT_HEADS[v] for o, v in zip(outputs, variants)}


def create_model(spec: str, variant: str | None = None, outputs: Sequence[str] | None = None, seed: int = 0,
                adapters: Sequence[str | Path] = ()) -> MSTCLIPIQA:
    """A model by name: ``tiny``, ``tiny-hf``, ``paper-A``, ``paper-B``, a save_pretrained dir or a hub id."""
    outputs = list(outputs) if outputs else None
    torch.manual_seed(seed)  # random backbones and heads must be the same on --resume
    if spec in ("tiny", "tiny-hf"):
        backend = "transformers" if spec == "tiny-hf" else "open_clip"
        model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(heads=_heads(outputs, variant), backend=backend))
    elif spec in ("paper-A", "paper-B"):
        if variant and set(split_list(variant)) != {spec[-1]}:
            raise ValueError(f"--model {spec} is variant {spec[-1]}; drop --variant {variant} or pick the other")
        model = MSTCLIPIQA(MSTCLIPIQAConfig.paper(heads=_heads(outputs, spec[-1])))
    else:
        if variant:
            raise ValueError(f"--variant applies to tiny and paper models; {spec!r} has heads fixed by its config")
        model = MSTCLIPIQA.from_pretrained(spec)
        unknown = [o for o in outputs or [] if o not in model.outputs]
        if unknown:
            raise ValueError(f"--outputs {unknown} are not outputs of {spec}; it predicts {list(model.outputs)}")
    for directory in adapters:
        load_adapter(model, directory)
    return model
