"""Configuration as data: backbones, heads and initialisation of MST-CLIPIQA."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..backbones import BackboneConfig, Backend
from ..utils import check_range

HeadKind = Literal["template", "prompt"]

QUALITY_LEVELS = ("bad", "poor", "fair", "good", "perfect")
HEAD_RANGES = {"template": (1.0, 5.0), "prompt": (0.0, 5.0)}
VARIANT_HEADS = {"A": "template", "B": "prompt"}
FUSION_INITS = ("zero_shot", "random")


@dataclass
class MSTCLIPIQAConfig:
    """The whole model as data; ``to_json`` / ``from_json`` round-trip it.

    ``heads`` maps each named output (``quality``, ``correspondence``, ...) to
    its head kind: ``template`` (paper variant A) or ``prompt`` (variant B).
    ``score_ranges`` gives each output's range (template: [1, K]; prompt: the
    nominal [0, 5]). ``label_ranges`` records, per trained output, the label range
    of the data it was trained on: training maps those labels affinely onto the
    head's score range, so scores of models trained on different data sets are
    on one scale, and ``reward.utils.rescale(score, score_ranges[o], label_range(o))``
    gives a score in the training data's units.
    """

    coarse: BackboneConfig
    fine: BackboneConfig
    heads: dict[str, HeadKind] = field(default_factory=lambda: {"quality": "template"})
    score_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    label_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    fusion_hidden: int = 128
    template: str = "a photo with {} quality"
    levels: tuple[str, ...] = QUALITY_LEVELS
    temperature_init: float = 100.0
    attention_heads: int = 8
    init: Literal["zero_shot", "random"] = "zero_shot"
    gate_init_bias: float = 2.0
    prompt_cache_size: int = 1024

    def __post_init__(self) -> None:
        if isinstance(self.coarse, dict):
            self.coarse = BackboneConfig(**self.coarse)
        if isinstance(self.fine, dict):
            self.fine = BackboneConfig(**self.fine)
        if not self.heads:
            raise ValueError("heads must name at least one output, e.g. {'quality': 'template'}")
        for name, kind in self.heads.items():
            if kind not in HEAD_RANGES:
                raise ValueError(f"head {name!r} has kind {kind!r}; expected 'template' or 'prompt'")
        self.levels = tuple(self.levels)
        ranges = {name: HEAD_RANGES[kind] for name, kind in self.heads.items()}
        ranges.update({k: tuple(v) for k, v in self.score_ranges.items()})
        self.score_ranges = ranges
        unknown = sorted(set(self.label_ranges) - set(self.heads))
        if unknown:
            raise ValueError(f"label_ranges names {unknown}, not outputs; expected some of {list(self.heads)}")
        self.label_ranges = {k: check_range(v, f"label_ranges[{k!r}]") for k, v in self.label_ranges.items()}
        if self.init not in FUSION_INITS:
            raise ValueError(f"init must be one of {FUSION_INITS}, got {self.init!r}")

    @property
    def variant(self) -> str:
        kinds = set(self.heads.values())
        return "A" if kinds == {"template"} else "B" if kinds == {"prompt"} else "mixed"

    def label_range(self, output: str) -> tuple[float, float]:
        """The label range ``output`` was trained on; its score range when it was not trained on labels."""
        return self.label_ranges.get(output, self.score_ranges[output])

    @property
    def needs_prompts(self) -> bool:
        return "prompt" in self.heads.values()

    @classmethod
    def paper(cls, variant: str = "A", pretrained: bool = True, backend: Backend = "open_clip",
              **overrides: Any) -> MSTCLIPIQAConfig:
        """The paper's setting: OpenAI CLIP ViT-B/32 (coarse) and ViT-B/16 (fine).

        ``pretrained=False`` keeps the architecture with random weights (benchmarks).
        """
        heads = overrides.pop("heads", {"quality": _head_kind(variant)})
        if backend == "open_clip":
            tag = "openai" if pretrained else None
            coarse = BackboneConfig("open_clip", "ViT-B-32", tag)
            fine = BackboneConfig("open_clip", "ViT-B-16", tag, text=False)
        else:
            ids = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16")
            archs = [None, None] if pretrained else [_hf_base_arch(32), _hf_base_arch(16)]
            coarse = BackboneConfig("transformers", ids[0], ids[0] if pretrained else None, archs[0])
            fine = BackboneConfig("transformers", ids[1], ids[1] if pretrained else None, archs[1], text=False)
        return cls(coarse=coarse, fine=fine, heads=heads, **overrides)

    @classmethod
    def tiny(cls, variant: str = "A", backend: Backend = "open_clip", **overrides: Any) -> MSTCLIPIQAConfig:
        """Same architecture, tiny random backbones (patch 32 / 16 at 64 px): offline tests and demos."""
        heads = overrides.pop("heads", {"quality": _head_kind(variant)})
        make = _tiny_open_clip_arch if backend == "open_clip" else _tiny_hf_arch
        coarse = BackboneConfig(backend, f"tiny-p32-{backend}", None, make(32))
        fine = BackboneConfig(backend, f"tiny-p16-{backend}", None, make(16), text=False)
        overrides.setdefault("fusion_hidden", 16)
        overrides.setdefault("attention_heads", 4)
        return cls(coarse=coarse, fine=fine, heads=heads, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MSTCLIPIQAConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MSTCLIPIQAConfig fields {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> MSTCLIPIQAConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _head_kind(variant: str) -> HeadKind:
    if variant not in VARIANT_HEADS:
        raise ValueError(f"variant must be 'A' (template head) or 'B' (prompt head), got {variant!r}")
    return VARIANT_HEADS[variant]


def _tiny_open_clip_arch(patch: int) -> dict[str, Any]:
    return {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": patch},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }


def _tiny_hf_arch(patch: int) -> dict[str, Any]:
    return {
        "projection_dim": 64,
        "vision_config": {"image_size": 64, "patch_size": patch, "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 2, "num_attention_heads": 2},
        "text_config": {"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 128,
                        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77},
    }


def _hf_base_arch(patch: int) -> dict[str, Any]:
    return {
        "projection_dim": 512,
        "vision_config": {"image_size": 224, "patch_size": patch, "hidden_size": 768, "intermediate_size": 3072,
                          "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu"},
        "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                        "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
                        "hidden_act": "quick_gelu"},
    }
