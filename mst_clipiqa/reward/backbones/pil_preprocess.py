"""The reference's 8-bit PIL resize and crop of file inputs, for exact parity with published numbers.

The reference code feeds each image through Hugging Face's PIL-based CLIP image
processor: ``Image.open(path).convert("RGB")``, the short side resized to the
encoder's size with PIL's bicubic filter on 8-bit pixels (the long side
``int(size * long / short)``), a centre crop at offsets ``(side - size) // 2``,
then ``/ 255`` and normalisation. :func:`pil_fit` does the same up to the
normalisation, which the encoders' ``preprocess`` applies. It is not
differentiable; the default tensor path is (docs/paper.md says how far apart
the two are).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

PREPROCESS_CHOICES = ("tensor", "pil")


def pil_fit(item: str | Path | Image.Image, size: int) -> torch.Tensor:
    """An image file or PIL image -> (3, size, size) float32 in [0, 1], resized and cropped as PIL does in 8 bits."""
    if isinstance(item, (str, Path)):
        if not Path(item).is_file():
            raise ValueError(f"image file not found: {item}")
        with Image.open(item) as opened:
            image = opened.convert("RGB")
    elif isinstance(item, Image.Image):
        image = item.convert("RGB")
    else:
        raise ValueError(f"preprocess='pil' reads image files and PIL images, got {type(item).__name__}; "
                         "use preprocess='tensor' for arrays and tensors")
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    image = image.resize((size, new_long) if width <= height else (new_long, size), Image.BICUBIC)
    top, left = (image.height - size) // 2, (image.width - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
