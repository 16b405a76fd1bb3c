"""What a backbone is built from: a backend, a name and where its weights come from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Backend = Literal["open_clip", "transformers"]


@dataclass
class BackboneConfig:
    """One frozen CLIP encoder.

    ``name`` is an open_clip model name (``ViT-B-32``) or a Hugging Face id /
    local directory. ``pretrained`` says where weights come from: an open_clip
    tag (``openai``) or checkpoint file, or for transformers an id / directory.
    ``None`` means the weights are not fetchable by name (random or imported),
    so ``save_pretrained`` stores them beside the heads. ``arch`` is an explicit
    architecture (open_clip model config, or transformers ``CLIPConfig`` dict)
    used instead of the built-in one for ``name``.
    """

    backend: Backend
    name: str
    pretrained: str | None = None
    arch: dict[str, Any] | None = None
    text: bool = True
