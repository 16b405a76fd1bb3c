"""Quality maps drawn over the images they describe, for contact sheets and reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from mst_clipiqa.reward.utils import UNIT, rescale

from ..rewards import Rewards, map_reward
from .grid import to_pil

__all__ = ["overlay_map", "quality_maps"]

COLORMAP = "magma"  # dark low, bright high: the grey maps' order (``score --maps``), in colour


def overlay_map(image: Image.Image | torch.Tensor, values: torch.Tensor, value_range: tuple[float, float],
                alpha: float = 0.5) -> Image.Image:
    """``image`` (PIL or (3, H, W) in [0, 1]) with its quality map ``values`` (h, w) blended over the centre
    square the fine stream sees (the whole of a square image), one block per region, coloured by where each
    value lies in ``value_range`` (the reward's ``score_range``; magma: dark low, bright high)."""
    from matplotlib import colormaps

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1] (the heatmap's opacity), got {alpha}")
    low, high = value_range
    pil = image.convert("RGB") if isinstance(image, Image.Image) else to_pil(image)
    fraction = ((values.detach().float().cpu() - low) / (high - low)).clamp(0, 1).numpy()
    heat = Image.fromarray((colormaps[COLORMAP](fraction)[..., :3] * 255).round().astype(np.uint8))
    side = min(pil.size)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    square = pil.crop((left, top, left + side, top + side))
    pil.paste(Image.blend(square, heat.resize((side, side), Image.NEAREST), alpha), (left, top))
    return pil


def quality_maps(reward: Rewards, images: torch.Tensor | list[torch.Tensor], prompt: Any = None
                 ) -> tuple[torch.Tensor, tuple[float, float]]:
    """The (N, h, w) quality maps of (N, 3, H, W) images in [0, 1] (or a list of (3, H, W) ones) by the
    MST-CLIPIQA reward in ``reward`` (alone, under ``NamedScores`` or in a mapping), and the range they are in
    (its ``score_range``)."""
    scorer = map_reward(reward)
    if scorer is None:
        raise ValueError("quality maps need an MSTCLIPIQAReward, alone or in the mapping of rewards; got none")
    images = [image.float().cpu() for image in images]
    if tuple(scorer.input_range) != UNIT:
        images = [rescale(image, UNIT, scorer.input_range) for image in images]
    return scorer.score_maps(images, prompt), scorer.score_range
