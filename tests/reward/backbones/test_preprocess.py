import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

from benchmarks.gpu_reward import legacy_resize_crop  # F.interpolate of the whole image, then the centre crop
from mst_clipiqa.reward.backbones.preprocess import (
    ImageSpec,
    center_crop,
    fit_to_size,
    preprocess,
    resize_crop,
    resize_short_side,
)

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
    from mst_clipiqa.reward import straight_through_clamp

    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = straight_through_clamp(x)
    assert y.tolist() == [0.0, 0.5, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), size=st.sampled_from([3, 16, 33, 64]), seed=st.integers(0, 99))
def test_resize_crop_is_legacy_resize_crop_with_the_same_gradients(h, w, size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = resize_crop(x, size), legacy_resize_crop(x, size)
    assert ours.shape == ref.shape == (2, 3, size, size)
    cotangent = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (grad_ours,), (grad_ref,) = (torch.autograd.grad(y, x, cotangent) for y in (ours, ref))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)  # float64: the same weights, exactly
    torch.testing.assert_close(grad_ours, grad_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("hw", [(1024, 1024), (512, 768), (300, 200), (100, 160), (2000, 30)])
def test_float32_resize_is_within_stated_tolerance_of_the_interpolate_kernel(hw):
    x = torch.rand(1, 3, *hw, dtype=torch.float64)
    exact = legacy_resize_crop(x, 224)
    ours, kernel = resize_crop(x.float(), 224), legacy_resize_crop(x.float(), 224)
    assert (ours - exact).abs().max() < 1e-6  # measured <= 4e-7
    assert (ours - kernel).abs().max() < 1e-4  # F.interpolate's float32 kernel: measured <= 6e-5 from exact


def test_resize_gradients_pass_gradcheck_to_second_order():
    for hw, size in [((9, 13), 5), ((4, 6), 9), ((40, 3), 7)]:
        x = torch.rand(1, 2, *hw, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, s=size: resize_crop(t, s), (x,))
        assert torch.autograd.gradgradcheck(lambda t, s=size: resize_crop(t, s), (x,))


def test_resize_short_side_keeps_the_aspect_and_fit_to_size_crops():
    x = torch.rand(3, 100, 160)
    assert resize_short_side(x[None], 50).shape == (1, 3, 50, 80)
    torch.testing.assert_close(fit_to_size(x, 50), center_crop(resize_short_side(x[None], 50), 50)[0])
    same = torch.rand(1, 3, 64, 90)
    cropped = resize_crop(same, 64)  # short side already right: only cropped, a view
    assert cropped.untyped_storage().data_ptr() == same.untyped_storage().data_ptr()
    torch.testing.assert_close(cropped, center_crop(same, 64), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_are_resized_in_float32_and_keep_their_dtype(dtype):
    half = torch.rand(2, 3, 50, 70).to(dtype).requires_grad_(True)
    full = half.detach().float().requires_grad_(True)
    out, ref = resize_crop(half, 64), resize_crop(full, 64)
    assert out.dtype == dtype and preprocess(half, SPEC).dtype == dtype
    eps = torch.finfo(dtype).eps
    assert (out.float() - ref).abs().max() <= eps * ref.abs().max()  # one rounding to the dtype
    cotangent = torch.randn(ref.shape)
    out.backward(cotangent.to(dtype))
    ref.backward(cotangent)
    assert half.grad.dtype == dtype
    assert (half.grad.float() - full.grad).abs().max() <= 4 * eps * full.grad.abs().max()


def test_autocast_does_not_run_the_resize_in_half_precision():
    x = torch.rand(1, 3, 90, 120)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = resize_crop(x, 64)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, resize_crop(x, 64), rtol=0, atol=0)


class LargestTensor(TorchDispatchMode):
    """The most elements any single operator output holds."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_extreme_aspect_memory_follows_the_output_size():
    # 1 x 2000 strips: resizing the short side first would make (5, 3, 64, 128000) tensors (~490 MB)
    x = torch.rand(5, 3, 1, 2000, requires_grad=True)
    with LargestTensor() as largest:
        out = resize_crop(x, 64)
        out.square().sum().backward()
    assert out.shape == (5, 3, 64, 64)
    assert largest.numel <= max(x.numel(), out.numel())
    assert torch.isfinite(x.grad).all() and (x.grad != 0).sum() >= 5 * 3 * 2  # the centre columns get gradients
    strip = torch.rand(1, 3, 1, 300, dtype=torch.float64)  # small enough for the old way
    torch.testing.assert_close(resize_crop(strip, 64), legacy_resize_crop(strip, 64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reward_scores_half_precision_images_that_need_resizing(tiny_models, dtype):
    from mst_clipiqa.reward import MSTCLIPIQAReward

    reward = MSTCLIPIQAReward(tiny_models())
    images = torch.rand(2, 3, 80, 100).to(dtype).requires_grad_(True)
    scores = reward(images)
    reference = reward(images.detach().float())
    assert scores.dtype == torch.float32 and torch.allclose(scores, reference, atol=0.02)  # of a 1..5 scale
    scores.sum().backward()
    assert images.grad.dtype == dtype and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
