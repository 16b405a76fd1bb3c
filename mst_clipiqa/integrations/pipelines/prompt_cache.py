"""Prompt embeddings computed once per prompt, so that a trainer can release the text encoders (T5-XXL alone is
9 GiB in bf16) once its prompts are encoded: offloaded to the CPU (they come back for a prompt not seen before)
or freed (such a prompt is refused)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .families.base import Embeddings, PipelineFamily

__all__ = ["TEXT_ENCODERS", "PromptCache", "text_encoders"]

TEXT_ENCODERS = ("keep", "offload", "free")


def text_encoders(pipe: Any) -> dict[str, nn.Module]:
    """The pipeline's text encoders by component name (``text_encoder``, ``text_encoder_2``, ...)."""
    return {name: module for name, module in pipe.components.items()
            if name.startswith("text_encoder") and isinstance(module, nn.Module)}


class PromptCache:
    """``encode`` as :meth:`PipelineFamily.encode` computes it, one prompt at a time and each prompt once (its
    embeddings then do not depend on the prompts batched with it), kept off the GPU.

    ``release``: what :meth:`release` does with the text encoders once the known prompts are encoded
    (:meth:`warm`): ``"keep"`` them where they are, ``"offload"`` them to the CPU (moved back to the device for
    a prompt not cached yet, then offloaded again) or ``"free"`` them (such a prompt is a ValueError).
    """

    def __init__(self, family: PipelineFamily, release: str = "offload"):
        if release not in TEXT_ENCODERS:
            raise ValueError(f"text_encoders={release!r}: expected one of {', '.join(TEXT_ENCODERS)}")
        self.family, self.release_mode = family, release
        self.cache: dict[tuple[Any, ...], Embeddings] = {}
        self.released = False

    @property
    def pipe(self) -> Any:
        return self.family.pipe

    def encode(self, prompts: str | Sequence[str], *, guidance: bool = False, **encode_kwargs: Any) -> Embeddings:
        """Embeddings of ``prompts`` (one row each) on the pipeline's device, the same outputs as the family's."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        options = tuple(sorted((k, repr(v)) for k, v in encode_kwargs.items()))
        keys = [(p, guidance, options) for p in prompts]
        missing = list(dict.fromkeys(key for key in keys if key not in self.cache))
        if missing:
            with self._encoders_back(missing[0][0]):
                for key in missing:
                    embeds = self.family.encode([key[0]], guidance=guidance, **encode_kwargs)
                    self.cache[key] = {name: t.cpu() if t.is_cuda else t for name, t in embeds.items()}
        device = self.pipe._execution_device
        rows = [self.cache[key] for key in keys]
        return {name: torch.cat([row[name] for row in rows]).to(device) for name in rows[0]}

    def warm(self, prompts: Iterable[str], *, guidance: bool = False, **encode_kwargs: Any) -> None:
        """Encode ``prompts`` now (each once), then :meth:`release` the text encoders."""
        distinct = list(dict.fromkeys(prompts))
        if distinct:
            self.encode(distinct, guidance=guidance, **encode_kwargs)
        self.release()

    def release(self) -> None:
        """Offload or free the text encoders (``release``); ``"keep"`` leaves them."""
        if self.release_mode == "offload":
            for module in text_encoders(self.pipe).values():
                module.to("cpu")
        elif self.release_mode == "free":
            self.pipe.register_modules(**{name: None for name in text_encoders(self.pipe)})
        self.released = self.release_mode != "keep"

    @contextmanager
    def _encoders_back(self, prompt: str) -> Iterator[None]:
        """The text encoders on the pipeline's device for a prompt not yet cached (and offloaded again after)."""
        if not self.released:
            yield
            return
        if self.release_mode == "free":
            raise ValueError(f"prompt {prompt!r} was not encoded before the text encoders were freed "
                             "(text_encoders='free'); use text_encoders='offload' to encode new prompts")
        device = self.pipe._execution_device
        for module in text_encoders(self.pipe).values():
            module.to(device)
        try:
            yield
        finally:
            self.release()
