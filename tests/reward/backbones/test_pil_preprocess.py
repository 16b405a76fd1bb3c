"""preprocess="pil" resizes and crops as the reference's PIL-based CLIP image processor does, pixel for pixel."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.reward.backbones import fit_to_size
from mst_clipiqa.reward.backbones.pil_preprocess import pil_fit
from mst_clipiqa.reward.scoring.images import load_image
from mst_clipiqa.reward.training.features import ImageFiles

image_transforms = pytest.importorskip("transformers.image_transforms")


def reference_pixels(image: Image.Image, size: int) -> np.ndarray:
    """Hugging Face's PIL path (the slow CLIP processor): short side to ``size`` with PIL bicubic, centre crop."""
    array = np.asarray(image.convert("RGB"))
    height, width = image_transforms.get_resize_output_image_size(array, size, default_to_square=False)
    resized = image_transforms.resize(array, (height, width), resample=Image.BICUBIC)
    return image_transforms.center_crop(resized, (size, size))


@pytest.mark.parametrize("box", [None, (0, 0, 512, 400), (30, 0, 330, 512)])
def test_pil_fit_matches_the_reference_pixels(sample_dir, box):
    path = sorted((sample_dir / "images").iterdir())[0]
    image = Image.open(path).convert("RGB")
    image = image.crop(box) if box else image
    ours = pil_fit(image if box else path, 224)
    expected = torch.from_numpy(reference_pixels(image, 224).copy()).permute(2, 0, 1).float() / 255.0
    assert ours.shape == (3, 224, 224)
    assert torch.equal(ours, expected)
    default = fit_to_size(load_image(image), 224)  # the differentiable path: the same method, not bit for bit
    assert 0 < (default - ours).abs().max() < 10 / 255


def test_pil_preprocess_rejects_tensors_and_unknown_names():
    with pytest.raises(ValueError, match="image files and PIL images"):
        pil_fit(torch.zeros(3, 8, 8), 8)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        ImageFiles([], 8, preprocess="cv2")
