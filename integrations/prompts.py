"""Encode a prompt once with a pipeline's own ``encode_prompt`` and hand the
embeddings back to its ``__call__`` (or to the training loop) by name."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch

__all__ = ["encode_prompt", "guidance_enabled", "split_prompt_kwargs", "supports_prompt_embeds"]

# What each pipeline's encode_prompt returns, named as its __call__ takes it back.
_ENCODE_OUTPUTS: dict[str, tuple[str | None, ...]] = {
    "StableDiffusionPipeline": ("prompt_embeds", "negative_prompt_embeds"),
    "StableDiffusionXLPipeline": (
        "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
    "StableDiffusion3Pipeline": (
        "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
    "FluxPipeline": ("prompt_embeds", "pooled_prompt_embeds", None),
    "PixArtAlphaPipeline": (
        "prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask"),
    "PixArtSigmaPipeline": (
        "prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask"),
}
_TEXT_KWARG = re.compile(r"^(negative_)?prompt(_\d)?$")


def _output_names(pipe: Any) -> tuple[str | None, ...] | None:
    for cls in type(pipe).__mro__:
        if cls.__name__ in _ENCODE_OUTPUTS:
            return _ENCODE_OUTPUTS[cls.__name__]
    return None


def supports_prompt_embeds(pipe: Any) -> bool:
    """Whether this pipeline's prompt can be encoded once and passed back as embeddings."""
    return _output_names(pipe) is not None and callable(getattr(pipe, "encode_prompt", None))


def guidance_enabled(pipe: Any, call_kwargs: dict[str, Any]) -> bool:
    """Classifier-free guidance as the pipeline's ``__call__`` would decide it (scale > 1)."""
    if "guidance_scale" in call_kwargs:
        return float(call_kwargs["guidance_scale"]) > 1.0
    default = inspect.signature(pipe.__call__).parameters.get("guidance_scale")
    return default is not None and isinstance(default.default, (int, float)) and default.default > 1.0


def split_prompt_kwargs(pipe: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``__call__`` kwargs into (for ``encode_prompt``, for ``__call__`` once embeddings are given).

    Text inputs (``negative_prompt``, ``prompt_2``, ...) move to the encoder; the
    pipeline would reject them next to the embeddings they produced.
    """
    accepted = inspect.signature(pipe.encode_prompt).parameters
    encode = {k: v for k, v in kwargs.items()
              if (k in accepted or _TEXT_KWARG.match(k)) and k not in ("device", "num_images_per_prompt")}
    call = {k: v for k, v in kwargs.items() if not _TEXT_KWARG.match(k)}
    return encode, call


def encode_prompt(
    pipe: Any,
    prompt: str | list[str],
    *,
    do_classifier_free_guidance: bool = False,
    num_images_per_prompt: int = 1,
    **encode_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Run ``pipe.encode_prompt`` once, without gradients, and name its outputs.

    Returns e.g. ``{"prompt_embeds": ..., "negative_prompt_embeds": ...}`` for
    SD 1.x/2.x, plus the pooled embeddings for SDXL / SD3, as ``__call__`` takes
    them. Raises ValueError for pipelines whose encoder outputs are not known.
    """
    names = _output_names(pipe)
    if names is None or not callable(getattr(pipe, "encode_prompt", None)):
        known = ", ".join(sorted(_ENCODE_OUTPUTS))
        raise ValueError(f"{type(pipe).__name__} has no known encode_prompt outputs; supported: {known}")
    accepted = inspect.signature(pipe.encode_prompt).parameters
    # Pipelines whose encode_prompt takes no negative prompt (Flux) encode it as a second prompt.
    separate = {k[len("negative_"):]: encode_kwargs.pop(k) for k in list(encode_kwargs)
                if k.startswith("negative_prompt") and k not in accepted}
    call = {
        "prompt": prompt,
        "device": pipe._execution_device,
        "num_images_per_prompt": num_images_per_prompt,
        "do_classifier_free_guidance": do_classifier_free_guidance,
        **encode_kwargs,
    }
    for name, param in accepted.items():  # SD3 requires prompt_2 / prompt_3 (None: reuse prompt)
        if name not in call and param.default is inspect.Parameter.empty and _TEXT_KWARG.match(name):
            call[name] = None
    embeds = _named(pipe, names, {k: v for k, v in call.items() if k in accepted})
    if separate.get("prompt") is not None:
        negative = {k: v for k, v in {**call, **separate}.items() if k in accepted}
        embeds.update({f"negative_{k}": v for k, v in _named(pipe, names, negative).items()})
    return embeds


def _named(pipe: Any, names: tuple[str | None, ...], call: dict[str, Any]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        outputs = pipe.encode_prompt(**call)
    return {name: t for name, t in zip(names, outputs) if name is not None and t is not None}
