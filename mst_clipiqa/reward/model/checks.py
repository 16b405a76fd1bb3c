"""Input validation with errors that name what was wrong and what is expected."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def check_image_shape(images: torch.Tensor) -> None:
    """A float (B, 3, H, W) tensor with B, H, W >= 1; the error says how to get there."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a float torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}; "
                         "reward.score() reads paths, PIL images and arrays (no gradients), or convert them with "
                         "torch.as_tensor")
    shape = tuple(images.shape)
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dimensions (B, 3, H, W), got shape {shape}"
                         + ("; add the batch dimension with images[None]" if images.ndim == 3 else ""))
    if images.shape[1] != 3:
        hint = "; they look channels-last: pass images.permute(0, 3, 1, 2)" if images.shape[3] == 3 else ""
        raise ValueError(f"images must have 3 (RGB) channels in dim 1, got shape {shape}{hint}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); expected at least one image")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images have a zero-sized side, shape {shape}; expected at least 1x1 pixels")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor to carry gradients, got {images.dtype}; "
                         + ("convert with images.float() / 255 (reward.score() reads uint8 as 0..255)"
                            if images.dtype == torch.uint8 else "convert to float pixels in the input range"))


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
