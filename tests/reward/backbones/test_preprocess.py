import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

from reward.backbones.preprocess import ImageSpec, center_crop, preprocess, resize_short_side

SPEC = ImageSpec(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def pil_reference(image: Image.Image, size: int) -> torch.Tensor:
    out = Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size)])(image)
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255


def test_tensor_resize_is_close_to_pil_bicubic_on_real_images(sample_dir):
    errors = []
    for path in sorted((sample_dir / "images").iterdir())[:12]:
        image = Image.open(path).convert("RGB")
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 255
        ours = center_crop(resize_short_side(x, 224), 224)[0]
        errors.append((ours - pil_reference(image, 224)).abs())
    errors = torch.stack(errors)
    # measured on the AGIQA-3K sample: mean |diff| ~ 1e-3, 99.9th percentile < 2/255 (uint8 rounding, overshoot clip)
    assert errors.mean() < 2e-3
    assert errors.flatten().kthvalue(int(0.999 * errors.numel())).values < 3 / 255


@pytest.mark.parametrize("hw", [(300, 200), (200, 300), (224, 224), (100, 160), (257, 513)])
def test_geometry_matches_torchvision(hw):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8))
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()[None] / 255
    out = preprocess(x, SPEC)
    assert out.shape == (1, 3, 224, 224)
    assert (center_crop(resize_short_side(x, 224), 224)[0] - pil_reference(image, 224)).abs().mean() < 0.02


def test_preprocess_is_differentiable_everywhere():
    x = torch.rand(2, 3, 300, 180, requires_grad=True)
    preprocess(x, SPEC).sum().backward()
    inner = x.grad[..., 70:-70, :]  # the centre crop keeps about the middle 180 rows
    assert torch.isfinite(x.grad).all() and (inner.abs() > 0).float().mean() > 0.99


def test_normalisation_uses_the_spec():
    x = torch.full((1, 3, 224, 224), 0.5)
    out = preprocess(x, SPEC)
    expected = (0.5 - torch.tensor(SPEC.mean)) / torch.tensor(SPEC.std)
    assert torch.allclose(out[0, :, 0, 0], expected)


def test_straight_through_clamp_keeps_gradients_outside_the_range():
    from reward import straight_through_clamp

    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = straight_through_clamp(x)
    assert y.tolist() == [0.0, 0.5, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
