"""Where fine-tuning prompts come from: a list, a text file, or a DDPO-style ``prompt_fn() -> (prompt, metadata)``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from ..pipelines.prompt_cache import PromptCache

__all__ = ["Prompts", "PromptSource", "read_prompt_file"]

PromptFn = Callable[[], Any]
Prompts = Union[str, "os.PathLike[str]", Sequence[str], PromptFn]


def read_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """One prompt per non-empty line (UTF-8; a byte-order mark is not part of the first prompt)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist; expected a text file with one prompt per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"prompt file {path} is not UTF-8 text ({error}); expected one prompt per line") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts; expected one prompt per line")
    return prompts


class PromptSource:
    """The training prompts of one process.

    * a list of strings (or one string): drawn uniformly with replacement from the
      fine-tuner's generator, which is seeded per process and checkpointed;
    * a ``pathlib.Path`` (any ``os.PathLike``): a text file, one prompt per line,
      drawn like a list;
    * a callable ``prompt_fn()`` returning ``(prompt, metadata)`` (DDPO's contract)
      or a bare prompt: called once per image. The fine-tuner seeds Python's,
      numpy's and torch's global generators per process and checkpoints them, so a
      ``prompt_fn`` drawing from them gets distinct prompts on every process and
      the same ones after a resume. ``metadata`` is not used: rewards here take
      images and prompts.
    """

    def __init__(self, prompts: Prompts):
        self.prompt_fn: PromptFn | None = None
        self.prompts: list[str] | None = None
        if isinstance(prompts, os.PathLike):
            self.prompts = read_prompt_file(prompts)
        elif callable(prompts):
            self.prompt_fn = prompts
        else:
            self.prompts = self._checked_list(prompts)

    @staticmethod
    def _checked_list(prompts: str | Sequence[str]) -> list[str]:
        if isinstance(prompts, str):
            if prompts.endswith(".txt") and Path(prompts).is_file():
                raise ValueError(f"prompts={prompts!r} names a file; pass pathlib.Path({prompts!r}) to read "
                                 "prompts from it, or [text] to use the text itself as the prompt")
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings, a pathlib.Path to a text file, or a "
                             "prompt_fn() -> (prompt, metadata)")
        return prompts

    def draw(self, n: int, generator: torch.Generator) -> list[str]:
        """``n`` training prompts."""
        if self.prompts is not None:
            picks = torch.randint(len(self.prompts), (n,), generator=generator).tolist()
            return [self.prompts[i] for i in picks]
        return [self._call() for _ in range(n)]

    def _call(self) -> str:
        out = self.prompt_fn()
        prompt = out[0] if isinstance(out, tuple) else out
        if not isinstance(prompt, str):
            raise ValueError(f"prompt_fn returned {type(prompt).__name__}; expected (prompt, metadata) with a "
                             "string prompt, or a string")
        return prompt

    def cache(self, family: Any, run: Any, *, guidance: bool, **encode_kwargs: Any) -> PromptCache:
        """Every prompt known before the run (training, sample grids, monitor) encoded once, then the text
        encoders released as ``run.text_encoders`` says. A ``prompt_fn``'s prompts are not known in advance:
        the encoders stay (``"free"`` is refused)."""
        mode = run.text_encoders
        if self.prompts is None:
            if mode == "free":
                raise ValueError("text_encoders='free' needs a list of prompts (a prompt_fn's are not known "
                                 "before the run); use text_encoders='offload' or 'keep'")
            mode = "keep"
        cache = PromptCache(family, mode)
        known = [*(self.prompts or ()), *run.sample_prompts, *run.monitor_prompts]
        cache.warm(known, guidance=guidance, negative_prompt=run.negative_prompt, **encode_kwargs)
        return cache
