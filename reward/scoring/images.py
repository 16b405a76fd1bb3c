"""Turn the things users score (paths, PIL images, uint8 arrays, tensors) into [0, 1] tensors."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def load_image(item: ImageLike) -> torch.Tensor:
    """One image as a (3, H, W) float tensor in [0, 1]."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        try:
            with Image.open(path) as image:
                return pil_to_tensor(image)
        except OSError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
    if isinstance(item, Image.Image):
        return pil_to_tensor(item)
    if isinstance(item, np.ndarray):
        return _array_to_tensor(item)
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise ValueError(f"a single tensor image must be (3, H, W), got {tuple(item.shape)}")
        return item.float()
    raise ValueError(f"cannot score an object of type {type(item).__name__}; expected a path, PIL image, "
                     "uint8 numpy array (H, W, 3) or tensor")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return _array_to_tensor(np.asarray(image.convert("RGB")))


def _array_to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"numpy images must be (H, W, 3) or (H, W), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 in [0, 255], got dtype {array.dtype}")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


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
        raise ValueError(f"no images found in {[str(i) for i in items]}")
    return paths


def as_image_list(images: Any) -> list[ImageLike]:
    """Accept one image, a list of images, a folder, or a (B, 3, H, W) tensor."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        return list_images(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]
