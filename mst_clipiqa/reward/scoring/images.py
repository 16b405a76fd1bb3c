"""The one image reader: files, PIL images, arrays and tensors in, (3, H, W) float pixels in [0, 1] out.

The rule, the same for ``MSTCLIPIQAReward.score``, ``ddpo_reward_fn``, the CLI and the data set loaders:

- **Files and PIL images** are read by their mode's range: 8-bit modes 0..255, 16-bit (``I;16*``, and ``I``,
  which 16-bit PNGs and TIFFs open as) 0..65535, float (``F``) [0, 1]. EXIF orientation is applied, and
  transparent pixels are composited on white (``BACKGROUND``).
- **Arrays and tensors** by their dtype: uint8 0..255, uint16 0..65535, float in ``input_range`` ([0, 1]
  by default). Other integer dtypes and bool are refused.
- **Layout**: 4 dimensions are a batch, 3 one image, 2 one grey image (H, W). The channels are the first
  axis of an image (NCHW for a batch) when it has size 3, else the last (NHWC); NCHW wins when both are 3.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

from ..utils import UNIT, rescale
from .inputs import check_image_values

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
SIXTEEN_BIT = 65535.0
_INTEGER_RANGES = {torch.uint8: 255.0, torch.uint16: SIXTEEN_BIT}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def load_image(item: ImageLike, input_range: tuple[float, float] = (0.0, 1.0), tolerance: float = 1e-3
               ) -> torch.Tensor:
    """One image as a (3, H, W) float32 tensor in [0, 1], by the module's rule.

    ``input_range`` is the range of float arrays and tensors (checked with ``tolerance``, then mapped to
    [0, 1]); everything else has a range of its own. Bad input is a ``ValueError`` naming the file or value.
    """
    if isinstance(item, (str, Path)):
        return read_image_file(item)
    if isinstance(item, Image.Image):
        return pil_to_tensor(item)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return _pixels(item, input_range, tolerance)
    raise ValueError(f"cannot read an image from an object of type {type(item).__name__}; expected a path, a "
                     "PIL image, a numpy array or a tensor (H, W, 3) / (3, H, W)")


def read_image_file(path: str | Path) -> torch.Tensor:
    """An image file as a (3, H, W) float32 tensor in [0, 1]; a missing or unreadable file is named."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_tensor(image, name=str(path))
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:  # PIL's errors for damaged files
        raise ValueError(f"cannot read image {path}: {error}") from error


def pil_to_tensor(image: Image.Image, name: str = "PIL image") -> torch.Tensor:
    """A PIL image as a (3, H, W) float32 tensor in [0, 1], by its mode's real range (see the module)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    _check_size(image.height, image.width, name)
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.asarray(image).astype(np.float32)
        if grey.min() < 0 or grey.max() > SIXTEEN_BIT:
            raise ValueError(f"{name}: mode {image.mode} image with values in [{grey.min():.0f}, {grey.max():.0f}]; "
                             "expected 16-bit data in 0..65535")
        return _grey(torch.from_numpy(grey / SIXTEEN_BIT))
    if image.mode == "F":
        grey = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        check_image_values(grey, (0.0, 1.0), 1e-3, what=f"{name} (mode F, floats in [0, 1])")
        return _grey(grey)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def channel_axis(shape: Sequence[int]) -> int:
    """Where the 3 channels are in an image (3 dims) or a batch (4 dims): first, else last (see the module)."""
    first, last = len(shape) - 3, len(shape) - 1
    if shape[first] == 3:
        return first
    if shape[last] == 3:
        return last
    expected = "(B, 3, H, W) or (B, H, W, 3)" if len(shape) == 4 else "(3, H, W), (H, W, 3) or (H, W)"
    raise ValueError(f"images of shape {tuple(shape)} have no axis of 3 (RGB) channels; expected {expected}")


def _pixels(array: np.ndarray | torch.Tensor, input_range: tuple[float, float], tolerance: float) -> torch.Tensor:
    tensor = torch.from_numpy(_native(array)) if isinstance(array, np.ndarray) else array.detach()
    if tensor.ndim == 2:
        tensor = tensor.expand(3, *tensor.shape)
    if tensor.ndim != 3:
        raise ValueError(f"one image must have 2 or 3 dimensions, (3, H, W), (H, W, 3) or (H, W); got shape "
                         f"{tuple(tensor.shape)}")
    tensor = tensor.movedim(channel_axis(tensor.shape), 0)
    _check_size(tensor.shape[1], tensor.shape[2], f"an image of shape {tuple(array.shape)}")
    if tensor.dtype in _INTEGER_RANGES:
        return tensor.float() / _INTEGER_RANGES[tensor.dtype]
    if not tensor.is_floating_point():
        raise ValueError(f"images of dtype {tensor.dtype} are ambiguous; expected uint8 (0..255), uint16 "
                         f"(0..65535) or float in input_range {input_range}: convert with .to(torch.uint8) if "
                         "they hold 0..255, else to float")
    check_image_values(tensor, input_range, tolerance)
    tensor = tensor.float()
    return tensor if tuple(input_range) == UNIT else rescale(tensor, input_range, UNIT)


def _native(array: np.ndarray) -> np.ndarray:
    """A numpy array torch can hold: native byte order (uint16 as torch.uint16)."""
    if array.dtype.kind not in "uif" and array.dtype != np.bool_:
        raise ValueError(f"numpy images must be uint8, uint16 or float, got dtype {array.dtype}")
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("=")))


def _grey(grey: torch.Tensor) -> torch.Tensor:
    return grey[None].expand(3, -1, -1).contiguous()


def _check_size(height: int, width: int, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{name} has a zero-sized side ({height}x{width} pixels); expected at least 1x1")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def collect_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files and folders (expanded to their images, sorted by name) as one list of files."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += list_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            raise ValueError(f"{item} is neither an image file nor a folder")
    if not paths:
        raise ValueError(f"no images found in {[str(i) for i in items]}; expected image files "
                         f"({', '.join(IMAGE_SUFFIXES)}) or folders holding them")
    return paths


def as_image_list(images: Any) -> list[ImageLike]:
    """One image, a list of images, a folder, or a batch (a 4-dimensional tensor or array, NCHW or NHWC)."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        axis = channel_axis(images.shape)
        return list(images.movedim(axis, 1) if isinstance(images, torch.Tensor) else np.moveaxis(images, axis, 1))
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        return list_images(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def describe_empty(images: Any) -> str:
    """Why ``as_image_list(images)`` is empty, for the error message."""
    if isinstance(images, (str, Path)):
        return f"folder {images} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
    return f"got an empty {type(images).__name__}; expected at least one image"
