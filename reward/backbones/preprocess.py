"""Differentiable CLIP preprocessing on tensors: resize the short side, centre crop, normalise.

Matches torchvision's ``Resize(size, BICUBIC) + CenterCrop(size)`` geometry
(the PIL pipeline CLIP was trained with) with antialiased bicubic
interpolation, so gradients flow from the embedding back to every input pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageSpec:
    """What an encoder expects: square side and per-channel mean / std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    if short == size:
        return images
    new_long = int(size * long / short)
    new_hw = (size, new_long) if h <= w else (new_long, size)
    return F.interpolate(images, size=new_hw, mode="bicubic", antialias=True, align_corners=False)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    mean = images.new_tensor(spec.mean).view(1, 3, 1, 1)
    std = images.new_tensor(spec.std).view(1, 3, 1, 1)
    return (images - mean) / std


def preprocess(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], any size and aspect -> (B, 3, S, S) normalised for the encoder."""
    return normalize(center_crop(resize_short_side(images, spec.size), spec.size), spec)


def fit_to_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, S, S), to batch images of mixed sizes.

    The same resize and crop ``preprocess`` applies, so a fitted image scores as the
    original would (``preprocess`` then finds nothing left to resize).
    """
    return center_crop(resize_short_side(image[None], size), size)[0]
