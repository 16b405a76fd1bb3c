"""Input validation with errors that name what was wrong and what is expected."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def check_image_shape(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dimensions (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels in dim 1, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); expected at least one image")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor, got {images.dtype}; convert uint8 with images / 255")


def check_prompts(prompts: Sequence[str] | None, batch: int, required: bool) -> list[str] | None:
    if prompts is None:
        if required:
            raise ValueError("this model has a prompt-anchored head (variant B): pass one prompt per image")
        return None
    if isinstance(prompts, str):
        prompts = [prompts] * batch  # one prompt for the whole batch
    prompts = list(prompts)
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for {batch} images; expected one prompt per image")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be strings; item {bad[0]} is {type(prompts[bad[0]]).__name__}")
    return prompts
