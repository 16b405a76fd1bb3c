"""Image grids and labelled contact sheets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["to_pil", "image_grid", "contact_sheet"]

GAP = 8  # px between labelled cells
LABEL_FONT_PX = 12  # Pillow's scalable default font: legible where the old 6-px bitmap font was not


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL image (for display and files only: no gradients here)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one (3, H, W) image, got shape {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def _as_pil(image: Image.Image | torch.Tensor) -> Image.Image:
    return image.convert("RGB") if isinstance(image, Image.Image) else to_pil(image)


def _fit(image: Image.Image, side: int) -> Image.Image:
    """Scale to fit a side x side cell; small images grow with nearest-neighbour so pixels stay visible."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.NEAREST if scale > 1 else Image.BICUBIC)


def image_grid(images: Sequence[Image.Image | torch.Tensor], columns: int | None = None,
               size: int | None = None) -> Image.Image:
    """Tile images (PIL or (3, H, W) tensors) into one image, ``size`` px per cell."""
    return contact_sheet(images, labels=None, columns=columns, thumb_size=size)


def contact_sheet(
    images: Sequence[Image.Image | torch.Tensor],
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    thumb_size: int | None = 128,
) -> Image.Image:
    """A grid of thumbnails, each with its label (e.g. rank, score, seed; lines split by newlines, long ones
    wrapped, never cut) written below it."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images; expected one label per image")
    pils = [_as_pil(im) for im in images]
    side = thumb_size or max(max(im.size) for im in pils)
    columns = columns or math.ceil(math.sqrt(len(pils)))
    rows = math.ceil(len(pils) / columns)
    font = ImageFont.load_default(size=LABEL_FONT_PX)
    texts = [_wrap(label, side - 4, font) for label in labels] if labels is not None else []
    label_h = max(text.count("\n") + 1 for text in texts) * (LABEL_FONT_PX + 3) + 4 if texts else 0
    gap = GAP if labels is not None else 0  # labelled cells apart, so each caption is seen under its image
    sheet = Image.new("RGB", (columns * (side + gap) - gap, rows * (side + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(pils):
        im = _fit(im, side)
        x, y = (i % columns) * (side + gap), (i // columns) * (side + label_h)
        sheet.paste(im, (x + (side - im.width) // 2, y + (side - im.height) // 2))
        if texts:
            draw.multiline_text((x + 2, y + side + 2), texts[i], fill="black", font=font, spacing=3)
    return sheet


def _wrap(label: str, width: int, font: ImageFont.ImageFont) -> str:
    """Each line of ``label`` broken to fit ``width`` pixels: at spaces, and inside a word (a file name) only
    when the word alone is too wide."""
    lines = []
    for line in label.split("\n"):
        while line:
            cut = len(line)
            while cut > 1 and font.getlength(line[:cut]) > width:
                cut -= 1
            space = line.rfind(" ", 0, cut + 1) if cut < len(line) else -1
            cut = space if space > 0 else cut
            lines.append(line[:cut])
            line = line[cut:].lstrip(" ")
    return "\n".join(lines) or " "
