"""Encode a prompt once with a pipeline's own ``encode_prompt`` and hand the embeddings back to its
``__call__`` (best-of-N), through the pipeline's registered family."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .families import find_family, pipeline_family
from .families.base import TEXT_KWARG

__all__ = ["encode_prompt", "guidance_enabled", "split_prompt_kwargs", "supports_prompt_embeds"]


def supports_prompt_embeds(pipe: Any) -> bool:
    """Whether this pipeline's prompt can be encoded once and passed back as embeddings (a registered family)."""
    return find_family(pipe) is not None and callable(getattr(pipe, "encode_prompt", None))


def guidance_enabled(pipe: Any, call_kwargs: dict[str, Any]) -> bool:
    """Classifier-free guidance as the pipeline's ``__call__`` would decide it."""
    family = pipeline_family(pipe)
    return family.uses_cfg(family.call_guidance_scale(call_kwargs))


def split_prompt_kwargs(pipe: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``__call__`` kwargs into (for ``encode_prompt``, for ``__call__`` once embeddings are given).

    Text inputs (``negative_prompt``, ``prompt_2``, ...) move to the encoder; the
    pipeline would reject them next to the embeddings they produced.
    """
    accepted = inspect.signature(pipe.encode_prompt).parameters
    encode = {k: v for k, v in kwargs.items()
              if (k in accepted or TEXT_KWARG.match(k)) and k not in ("device", "num_images_per_prompt")}
    call = {k: v for k, v in kwargs.items() if not TEXT_KWARG.match(k)}
    return encode, call


def encode_prompt(
    pipe: Any,
    prompt: str | list[str],
    *,
    do_classifier_free_guidance: bool = False,
    num_images_per_prompt: int = 1,
    **encode_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Run ``pipe.encode_prompt`` once, without gradients, and name its outputs as ``__call__`` takes them,
    e.g. ``{"prompt_embeds": ..., "negative_prompt_embeds": ...}`` (see ``PipelineFamily.encode``).

    Raises ValueError for a pipeline with no registered family.
    """
    return pipeline_family(pipe).encode(prompt, guidance=do_classifier_free_guidance,
                                        num_images_per_prompt=num_images_per_prompt, **encode_kwargs)
