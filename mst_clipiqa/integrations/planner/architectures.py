"""Pipelines without weights: the shipped architectures (``configs/*.json``), the tiny pipelines, a saved folder
or a Hub id (its config files only), built on the meta device so that a step can be traced at full size."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["ARCHITECTURES", "architecture", "meta_pipeline", "random_pipeline"]

_CONFIGS = Path(__file__).with_name("configs")
ARCHITECTURES = tuple(sorted(p.stem for p in _CONFIGS.glob("*.json")))
_TINY = {"tiny": "tiny_sd_pipeline", "tiny-turbo": "tiny_sd_turbo_pipeline", "tiny-sdxl": "tiny_sdxl_pipeline",
         "tiny-sd3": "tiny_sd3_pipeline", "tiny-flux": "tiny_flux_pipeline", "tiny-lcm": "tiny_lcm_pipeline",
         "tiny-pixart": "tiny_pixart_pipeline"}


def architecture(name: str) -> dict[str, Any]:
    """The shipped description of ``name`` (one of :data:`ARCHITECTURES`): pipeline class, Hub id, default
    resolution, and each component as ``[library, class, config]`` (tokenizers by kind)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"{name!r} is not a shipped architecture; expected one of {', '.join(ARCHITECTURES)}")
    return json.loads((_CONFIGS / f"{name}.json").read_text())


@contextmanager
def _default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _tokenizer(kind: str) -> Any:
    if kind == "t5":
        from ..pipelines.tiny import _tiny_t5_tokenizer  # ids below T5's vocabulary: shapes are what count

        return _tiny_t5_tokenizer()
    from mst_clipiqa.reward import openai_clip_tokenizer

    return openai_clip_tokenizer()


def _module(library: str, name: str, config: dict[str, Any]) -> Any:
    if library == "transformers":
        import transformers

        cls = getattr(transformers, name)
        config_cls = transformers.T5Config if name.startswith("T5") else transformers.CLIPTextConfig
        return cls(config_cls(**config))
    import diffusers

    return getattr(diffusers, name).from_config(config)


def _cast_buffers(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Floating buffers made in fp32 whatever the default dtype (SD3's 0.8 GiB position table) in ``dtype``, as
    ``from_pretrained(torch_dtype=...)`` leaves them."""
    for child in module.modules():
        for name, buffer in child._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                child._buffers[name] = buffer.to(dtype)
    return module


def _from_description(spec: dict[str, Any], dtype: torch.dtype, device: str = "meta",
                      without: tuple[str, ...] = ()) -> Any:
    import diffusers

    components: dict[str, Any] = {}
    for name, value in spec["components"].items():
        if name in without:
            continue
        if isinstance(value, str):
            components[name] = _tokenizer(value)
        elif name == "scheduler":
            components[name] = getattr(diffusers, value[1]).from_config(value[2])
        else:
            with torch.device(device), _default_dtype(dtype):
                components[name] = _cast_buffers(_module(*value).eval(), dtype)
    pipe_cls = getattr(diffusers, spec["pipeline"])
    return pipe_cls(**{k: components.get(k) for k in pipe_cls._get_signature_keys(pipe_cls)[0]})


def _read_json(source: str, filename: str) -> dict[str, Any]:
    path = Path(source) / filename
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source, filename))
        except Exception as error:  # offline, missing repo or file: one line
            raise ValueError(f"--pipeline {source}: cannot read {filename} ({type(error).__name__}); expected a "
                             f"shipped name ({', '.join(ARCHITECTURES)}), a tiny one, a saved pipeline folder "
                             "or a reachable Hub id") from None
    return json.loads(path.read_text())


def _describe_saved(source: str) -> dict[str, Any]:
    """A saved pipeline folder or Hub id as a shipped description: its configs, no weights."""
    index = _read_json(source, "model_index.json")
    components: dict[str, Any] = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        library, cls = entry
        if "Tokenizer" in cls:
            components[name] = "t5" if "T5" in cls else "clip"
        elif library in ("diffusers", "transformers"):
            config = _read_json(source, f"{name}/{'scheduler_config' if name == 'scheduler' else 'config'}.json")
            if library == "transformers":
                config = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
            components[name] = [library, cls, config]
    return {"pipeline": index["_class_name"], "hub_id": source, "components": components}


def meta_pipeline(name: Any, dtype: torch.dtype = torch.bfloat16) -> tuple[Any, dict[str, Any]]:
    """(``name``'s pipeline with meta weights in ``dtype``, its description). ``name``: a shipped architecture,
    a tiny pipeline, a saved folder, a Hub id (config files only) or a pipeline object (moved to meta)."""
    if not isinstance(name, str) or name in _TINY:
        from ..pipelines import tiny

        pipe = name if not isinstance(name, str) else getattr(tiny, _TINY[name])()
        name = name if isinstance(name, str) else type(pipe).__name__
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.to(device="meta", dtype=dtype)
        return pipe, {"pipeline": type(pipe).__name__, "hub_id": name}
    spec = architecture(name) if name in ARCHITECTURES else _describe_saved(name)
    return _from_description(spec, dtype), spec


def random_pipeline(name: str, dtype: torch.dtype, device: torch.device | str, without: tuple[str, ...] = ()) -> Any:
    """A shipped architecture with random weights on ``device`` (for measurements at full size, no download).
    ``without``: components left out (None), where the pipeline allows it, e.g. ``("text_encoder_3",)`` for
    SD3.5 without T5-XXL, whose embeddings diffusers then replaces by zeros of the same shape; a text encoder's
    tokenizer goes with it."""
    spec = architecture(name)
    unknown = [n for n in without if n not in spec["components"]]
    if unknown:
        raise ValueError(f"without {', '.join(unknown)}: not a component of {name}; expected some of "
                         f"{', '.join(spec['components'])}")
    without = (*without, *(n.replace("text_encoder", "tokenizer") for n in without if n.startswith("text_encoder")))
    return _from_description(spec, dtype, str(device), without)
