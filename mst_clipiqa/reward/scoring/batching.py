"""The one batched scoring loop: every way of scoring many images (``MSTCLIPIQAReward.score``, the CLI's
``score`` and ``rank``, ``integrations.score_images``, ``ddpo_reward_fn``) goes through ``score_in_batches``."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..backbones import fit_to_size
from ..model import check_prompts
from .images import as_image_list, describe_empty, load_image

NamedScores = Callable[[torch.Tensor, "list[str] | None"], "dict[str, torch.Tensor]"]


@torch.no_grad()
def score_in_batches(score_fn: NamedScores, images: Any, prompts: Sequence[str] | str | None = None, *,
                     batch_size: int = 32, fit_size: int | None = None, device: torch.device | str | None = None,
                     load: Callable[[Any], torch.Tensor] = load_image, require_prompts: bool = False
                     ) -> dict[str, torch.Tensor]:
    """Each named score (N,) of many images, float32 on the CPU, in input order; no gradients.

    ``images``: a folder, paths, PIL images, arrays or tensors, one image, a list or a batch (NCHW or
    NHWC), each turned into a (3, H, W) tensor by ``load`` (by default the rule of
    ``reward.scoring.images``). With ``fit_size`` every image is first resized and centre-cropped to
    that square (for a scorer whose preprocessing does exactly that, this changes nothing), so mixed
    sizes share batches; without it, images of one size are batched together and never resized.
    ``score_fn(batch, prompts)`` returns named (B,) scores (or (B, ...) values, such as quality maps);
    ``require_prompts``: the scorer needs one prompt per image.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = as_image_list(images)
    if not items:
        raise ValueError(f"no images to score: {describe_empty(images)}")
    prompts = check_prompts(prompts, len(items), required=require_prompts)
    if fit_size is not None:
        groups = [list(range(len(items)))]
        tensors = None
    else:
        tensors = [load(item) for item in items]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, tensor in enumerate(tensors):
            by_size.setdefault(tuple(tensor.shape), []).append(i)
        groups = list(by_size.values())
    parts: dict[str, torch.Tensor] = {}
    for group in groups:
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            if tensors is None:
                batch = torch.stack([fit_to_size(load(items[i]), fit_size) for i in chunk])
            else:
                batch = torch.stack([tensors[i] for i in chunk])
            if device is not None:
                batch = batch.to(device)
            scores = score_fn(batch, None if prompts is None else [prompts[i] for i in chunk])
            for name, value in scores.items():
                parts.setdefault(name, torch.empty(len(items), *value.shape[1:]))[chunk] = value.detach().float().cpu()
    return parts
