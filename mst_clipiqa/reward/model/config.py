"""Configuration as data: backbones, heads and initialisation of MST-CLIPIQA."""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from ..backbones import BackboneConfig, Backend
from ..utils import check_range
from .files import MODEL_TYPE, check_readable
from .fusion_inits import FUSION_INITS
from .heads import HEAD_KINDS
from .limits import check_config_sizes
from .model_configs import model_spec

HeadKind = str  # a key of HEAD_KINDS: "template", "prompt" or a registered kind

QUALITY_LEVELS = ("bad", "poor", "fair", "good", "perfect")
HEAD_RANGES = {kind: spec.score_range(len(QUALITY_LEVELS)) for kind, spec in HEAD_KINDS.items()}  # built-in kinds
VARIANT_HEADS = {"A": "template", "B": "prompt"}


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
    gives a score in the training data's units. ``ensemble`` = K > 1 holds K fusions with their heads
    over the one pair of frozen encoders (trained on bootstrap resamples); the score is their mean and
    their spread an uncertainty (``docs/uncertainty.md``).
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
    ensemble: int = 1

    def __post_init__(self) -> None:
        self.coarse = _backbone("coarse", self.coarse)
        self.fine = _backbone("fine", self.fine)
        if not self.coarse.text:
            raise ValueError("config field coarse.text must be true: the coarse backbone provides the text encoder")
        _check_heads(self.heads)
        self.levels = _check_levels(self.levels)
        if not isinstance(self.template, str) or "{}" not in self.template:
            raise ValueError(f"config field template must be a string with a {{}} for the level, got {self.template!r}")
        self.score_ranges = _score_ranges(self.score_ranges, self.heads, len(self.levels))
        for name, minimum in (("fusion_hidden", 1), ("attention_heads", 1), ("prompt_cache_size", 0),
                              ("ensemble", 1)):
            _check_int(name, getattr(self, name), minimum)
        for name in ("temperature_init", "gate_init_bias"):
            _check_number(name, getattr(self, name))
        unknown = sorted(set(self.label_ranges) - set(self.heads))
        if unknown:
            raise ValueError(f"config field label_ranges names {unknown}, not outputs; expected some of "
                             f"{list(self.heads)}")
        self.label_ranges = {k: check_range(v, f"label_ranges[{k!r}]") for k, v in self.label_ranges.items()}
        if self.init not in FUSION_INITS:
            raise ValueError(f"config field init must be 'zero_shot' or 'random', got {self.init!r}")
        width = _projection_width(self.coarse)
        if width is not None:
            self.check_attention_heads(width)
        check_config_sizes(self)

    def check_attention_heads(self, width: int) -> None:
        """The prompt head splits the ``width``-wide fused feature over ``attention_heads`` heads."""
        if self.needs_prompts and width % self.attention_heads:
            raise ValueError(f"config field attention_heads={self.attention_heads} does not divide the coarse "
                             f"embedding width {width}; expected a divisor of {width}")

    @property
    def variant(self) -> str:
        kinds = set(self.heads.values())
        return "A" if kinds == {"template"} else "B" if kinds == {"prompt"} else "mixed"

    def label_range(self, output: str) -> tuple[float, float]:
        """The label range ``output`` was trained on; its score range when it was not trained on labels."""
        return self.label_ranges.get(output, self.score_ranges[output])

    @property
    def needs_prompts(self) -> bool:
        return any(HEAD_KINDS[kind].needs_prompt for kind in self.heads.values())

    @property
    def embedded_backbones(self) -> list[str]:
        """The backbones (``coarse``, ``fine``) that name no pretrained source: their weights (random or
        imported) are stored with the model, in ``backbones.safetensors``."""
        return [name for name in ("coarse", "fine") if getattr(self, name).pretrained is None]

    @classmethod
    def paper(cls, variant: str = "A", pretrained: bool = True, backend: Backend = "open_clip",
              **overrides: Any) -> MSTCLIPIQAConfig:
        """The paper's setting: OpenAI CLIP ViT-B/32 (coarse) and ViT-B/16 (fine).

        ``pretrained=False`` keeps the architecture with random weights (benchmarks).
        """
        heads = overrides.pop("heads", {"quality": _head_kind(variant)})
        if backend == "open_clip":
            data = model_spec("paper-A")["config"]
            coarse, fine = (BackboneConfig(**{**data[k], "pretrained": data[k]["pretrained"] if pretrained else None})
                            for k in ("coarse", "fine"))
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
        names = {"open_clip": "tiny", "transformers": "tiny-hf"}
        if backend not in names:
            raise ValueError(f"backend must be one of {list(names)}, got {backend!r}")
        return cls(**{**model_spec(names[backend])["config"], **overrides}, heads=heads)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data; a single head (``ensemble`` 1) writes no ``ensemble`` key, so a one-head
        model's config (its file, and the run identity a fine-tuning checkpoint records) is what it was before
        ensembles existed."""
        data = asdict(self)
        if data["ensemble"] == 1:
            del data["ensemble"]
        return data

    def to_json(self, path: str | Path) -> None:
        """``config.json``: the fields, after a ``model_type`` naming the model (as Hugging Face configs do)."""
        Path(path).write_text(json.dumps({"model_type": MODEL_TYPE, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MSTCLIPIQAConfig:
        """A config from plain data (parsed JSON); every field is checked, errors name the field."""
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a JSON object of fields, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", MODEL_TYPE)  # configs saved before it was written have none
        if model_type != MODEL_TYPE:
            raise ValueError(f"config model_type is {model_type!r}, not {MODEL_TYPE!r}: not an MST-CLIPIQA model")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MSTCLIPIQAConfig fields {sorted(unknown)}; expected some of {sorted(known)}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing:
            raise ValueError(f"config lacks the required field(s) {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> MSTCLIPIQAConfig:
        """Read ``config.json``; an empty, truncated or invalid file is a ``ValueError`` naming it and the field."""
        path = Path(path)
        check_readable(path, "a JSON model config written by save_pretrained")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON (truncated or damaged?): {error}") from error
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error


def _backbone(name: str, value: Any) -> BackboneConfig:
    if isinstance(value, dict):
        known = {f.name for f in fields(BackboneConfig)}
        if set(value) - known or "backend" not in value or "name" not in value:
            raise ValueError(f"config field {name} must have backend, name and optionally pretrained, arch, "
                             f"text; got keys {sorted(value)}")
        value = BackboneConfig(**value)
    if not isinstance(value, BackboneConfig):
        raise ValueError(f"config field {name} must be a BackboneConfig or a dict, got {type(value).__name__}")
    checks = [("backend", value.backend in get_args(Backend), f"one of {list(get_args(Backend))}"),
              ("name", isinstance(value.name, str) and value.name != "", "a non-empty string"),
              ("pretrained", value.pretrained is None or isinstance(value.pretrained, str), "a string or null"),
              ("arch", value.arch is None or isinstance(value.arch, dict), "a dict or null"),
              ("text", isinstance(value.text, bool), "true or false")]
    for field_name, ok, expected in checks:
        if not ok:
            raise ValueError(f"config field {name}.{field_name} must be {expected}, "
                             f"got {getattr(value, field_name)!r}")
    return value


def _check_heads(heads: Any) -> None:
    if not isinstance(heads, dict) or not heads:
        raise ValueError(f"config field heads must map each output name to a head kind ({sorted(HEAD_KINDS)}), "
                         f"e.g. {{'quality': 'template'}}; got {heads!r}")
    for name, kind in heads.items():
        if not isinstance(name, str) or not isinstance(kind, str) or kind not in HEAD_KINDS:
            raise ValueError(f"head {name!r} has kind {kind!r}; expected one of {sorted(HEAD_KINDS)}")


def _check_levels(levels: Any) -> tuple[str, ...]:
    if (isinstance(levels, str) or not isinstance(levels, (list, tuple)) or len(levels) < 2
            or not all(isinstance(v, str) for v in levels) or len(set(levels)) != len(levels)):
        raise ValueError(f"config field levels must be two or more distinct strings, got {levels!r}")
    return tuple(levels)


def _score_ranges(ranges: Any, heads: dict[str, str], levels: int) -> dict[str, tuple[float, float]]:
    """Each head's default range (a template head scores in [1, number of levels]) with ``ranges`` on top."""
    if not isinstance(ranges, dict):
        raise ValueError(f"config field score_ranges must map output names to (low, high), got {ranges!r}")
    out = {name: HEAD_KINDS[kind].score_range(levels) for name, kind in heads.items()}
    for name, bounds in ranges.items():
        if name not in heads:
            raise ValueError(f"config field score_ranges names {name!r}, which is not an output in heads "
                             f"{list(heads)}")
        out[name] = check_range(bounds, f"config field score_ranges[{name!r}]")
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"config field {name} must be an integer >= {minimum}, got {value!r} "
                         f"({type(value).__name__})")


def _check_number(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"config field {name} must be a finite number, got {value!r} ({type(value).__name__})")


def _projection_width(backbone: BackboneConfig) -> int | None:
    """The projected embedding width an explicit ``arch`` states (open_clip or transformers), else None."""
    width = (backbone.arch or {}).get("embed_dim", (backbone.arch or {}).get("projection_dim"))
    return width if isinstance(width, int) and not isinstance(width, bool) and width > 0 else None


def _head_kind(variant: str) -> HeadKind:
    if variant not in VARIANT_HEADS:
        raise ValueError(f"variant must be 'A' (template head) or 'B' (prompt head), got {variant!r}")
    return VARIANT_HEADS[variant]


def _hf_base_arch(patch: int) -> dict[str, Any]:
    return {
        "projection_dim": 512,
        "vision_config": {"image_size": 224, "patch_size": patch, "hidden_size": 768, "intermediate_size": 3072,
                          "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu"},
        "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                        "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
                        "hidden_act": "quick_gelu"},
    }
