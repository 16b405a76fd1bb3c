"""The interface both backends implement: one frozen CLIP encoder."""
from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .casting import CastCache, cast_matmul_weights
from .preprocess import ImageSpec


class CLIPBackbone(nn.Module):
    """A frozen CLIP encoder: projected image / text embeddings and text token states.

    Subclasses set ``image_spec``, ``embed_dim``, ``text_width`` (0 without a
    text tower) and ``context_length``, and implement the encoders. The
    backbone never trains: its parameters do not require grad and it stays in
    eval mode whatever ``train()`` is asked.
    """

    image_spec: ImageSpec
    embed_dim: int
    text_width: int = 0
    context_length: int = 77
    adapter_targets: str = ""  # regex of the vision attention layers LoRA may adapt, relative to the backbone

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> CLIPBackbone:
        return super().train(False)

    @property
    def has_text(self) -> bool:
        return self.text_width > 0

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def text_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the text tower (none without one)."""
        raise NotImplementedError

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, embed_dim) projected embedding."""
        raise NotImplementedError

    def encode_image_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: the projected embedding (B, embed_dim), as ``encode_image``, and each patch token through the
        same final norm and visual projection, (B, grid, grid, embed_dim) in row-major patch order."""
        raise NotImplementedError

    def image_weights_in(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        """Inside the block, the image tower's matmul weights are ``dtype`` copies cast once and cached
        (see :mod:`.casting`): under autocast to ``dtype`` the same results, without re-casting every
        frozen weight on every call. float32, None or a GPU (where it costs more than it saves): nothing changes."""
        cache: CastCache = self.__dict__.setdefault("_weight_casts", {})  # one dict even when threads race here
        return cast_matmul_weights(self, dtype, cache, skip=self.text_parameters)

    def compile_image_encoder(self, **options: Any) -> None:
        """Run ``encode_image`` through ``torch.compile(**options)`` from now on (in place, for every user
        of this encoder). Batch sizes may vary: after the first change dynamo recompiles once with a
        symbolic batch size. The compiled function takes the encoder as an argument, so a deep copy
        gets its own compilation rather than calling the original's weights."""
        self.encode_image = types.MethodType(torch.compile(type(self).encode_image, **options), self)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Token ids (B, L), attention mask (B, L) bool, and how many texts were truncated."""
        raise NotImplementedError

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, embed_dim) projected text embedding."""
        raise NotImplementedError

    def text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, text_width) token states after the final layer norm."""
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        raise NotImplementedError

    def _require_text(self) -> None:
        if not self.has_text:
            raise ValueError("this backbone was built without its text tower (text=False)")


def patch_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) patch tokens of a square image -> (B, sqrt(N), sqrt(N), D)."""
    side = round(tokens.shape[1] ** 0.5)
    if side * side != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not form a square grid")
    return tokens.reshape(tokens.shape[0], side, side, tokens.shape[2])


def checkpoint_layers(layers: Iterable[nn.Module], enable: bool) -> None:
    """Recompute each layer in backward instead of storing its activations.

    Works in eval mode (transformers' own switch only acts in train mode, and
    frozen backbones never leave eval).
    """
    for layer in layers:
        if enable:
            layer.forward = functools.partial(checkpoint, type(layer).forward.__get__(layer), use_reentrant=False)
        else:
            layer.__dict__.pop("forward", None)
