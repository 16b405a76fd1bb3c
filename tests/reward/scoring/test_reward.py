import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward


@pytest.fixture()
def reward_a(tiny_models):
    return MSTCLIPIQAReward(tiny_models("A"))


@pytest.fixture()
def reward_b(tiny_models):
    return MSTCLIPIQAReward(tiny_models("B"))


@pytest.mark.parametrize("images, message", [
    (torch.rand(3, 64, 64), r"4 dimensions .*; add the batch dimension with images\[None\]"),
    (torch.rand(2, 4, 64, 64), "3 \\(RGB\\) channels"),
    (torch.rand(2, 64, 64, 3), r"channels-last: pass images.permute\(0, 3, 1, 2\)"),
    (torch.rand(0, 3, 64, 64), "empty batch"),
    (torch.rand(1, 3, 0, 64), r"zero-sized side, shape \(1, 3, 0, 64\)"),
    (torch.full((1, 3, 64, 64), float("nan")), "NaN or inf"),
    (torch.full((1, 3, 64, 64), float("inf")), "NaN or inf"),
    (torch.rand(1, 3, 64, 64) * 2 - 1, r"values in \[-.*\], outside input_range \(0, 1\); they look like \[-1, 1\] "
                                       r"pixels: pass input_range=\(-1, 1\)"),
    (torch.rand(1, 3, 64, 64) * 255, "outside input_range .*; they look like 0..255 pixels: divide by 255"),
    (torch.rand(1, 3, 64, 64) * 1.05, r"a slight overshoot, .*straight_through_clamp\(images, 0, 1\)"),
    (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), r"float tensor .*images.float\(\) / 255"),
    (torch.ones(1, 3, 64, 64, dtype=torch.bool), "float tensor to carry gradients, got torch.bool"),
    (np.zeros((1, 3, 64, 64), np.float32), r"got ndarray; reward.score\(\) reads paths, PIL images and arrays"),
])
def test_bad_images_raise(reward_a, images, message):
    with pytest.raises(ValueError, match=message):
        reward_a(images)


def test_prompt_errors(reward_a, reward_b):
    images = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="variant B.*one prompt per image"):
        reward_b(images)
    with pytest.raises(ValueError, match="got 1 prompts for 2 images"):
        reward_b(images, ["only one"])
    with pytest.raises(ValueError, match="got 3 prompts for 2 images"):
        reward_a(images, ["a", "b", "c"])
    with pytest.raises(ValueError, match="item 1 is int"):
        reward_b(images, ["a", 3])


def test_small_overshoot_is_tolerated(reward_a):
    images = torch.rand(1, 3, 64, 64)
    images[0, 0, 0, 0] = 1.0005
    assert torch.isfinite(reward_a(images)).all()


def test_input_range_minus_one_to_one_matches_unit_range(tiny_models):
    model = tiny_models("A")
    images = torch.rand(2, 3, 64, 64)
    unit = MSTCLIPIQAReward(model)(images)
    signed = MSTCLIPIQAReward(model, input_range=(-1, 1))(images * 2 - 1)
    assert torch.allclose(unit, signed, atol=1e-5)


def test_normalize_maps_to_unit_range_and_keeps_gradients(tiny_models):
    reward = MSTCLIPIQAReward(tiny_models("A"), normalize=True)
    assert reward.score_range == (0.0, 1.0) and reward.lower_better is False
    images = torch.rand(3, 3, 64, 64, requires_grad=True)
    scores = reward(images)
    raw = MSTCLIPIQAReward(tiny_models("A"))(images)
    assert torch.allclose(scores, (raw - 1) / 4, atol=1e-6)
    scores.sum().backward()
    assert images.grad.abs().sum() > 0


def test_weighted_outputs(tiny_models):
    model = tiny_models("A", heads={"quality": "template", "authenticity": "template"})
    reward = MSTCLIPIQAReward(model, outputs={"quality": 0.7, "authenticity": 0.3})
    images = torch.rand(2, 3, 64, 64)
    scores = model(images)
    assert torch.allclose(reward(images), 0.7 * scores["quality"] + 0.3 * scores["authenticity"], atol=1e-6)
    assert reward.score_range == pytest.approx((1.0, 5.0))
    with pytest.raises(ValueError, match=r"unknown outputs \['aesthetics'\]"):
        MSTCLIPIQAReward(model, outputs="aesthetics")
    with pytest.raises(ValueError, match="repeat a name"):
        MSTCLIPIQAReward(model, outputs=["quality", "quality"])
    with pytest.raises(ValueError, match="outputs is empty"):
        MSTCLIPIQAReward(model, outputs=[])


def test_loss_is_lower_better(reward_a):
    images = torch.rand(2, 3, 64, 64)
    assert torch.allclose(reward_a.loss(images), -reward_a(images).mean())
    assert torch.allclose(reward_a.loss(images, reduction="none"), -reward_a(images))
    with pytest.raises(ValueError, match="reduction"):
        reward_a.loss(images, reduction="sum")


def test_bf16_autocast_is_close_and_differentiable(tiny_models):
    model = tiny_models("A")
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    full = MSTCLIPIQAReward(model)(images)
    half = MSTCLIPIQAReward(model, dtype=torch.bfloat16)(images)
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, atol=0.1)
    half.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_gradient_checkpointing_gives_the_same_gradients(backend):
    from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig

    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A", backend=backend))
    images = torch.rand(2, 3, 64, 64, requires_grad=True)

    weights = {p.data_ptr() for p in model.parameters()}

    def run(reward):  # activations kept for backward, frozen weights aside
        saved = []
        keep = lambda t: saved.append(0 if t.data_ptr() in weights else t.numel()) or t  # noqa: E731
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            score = reward(images).sum()
        images.grad = None
        score.backward()
        return images.grad.clone(), sum(saved)

    plain, plain_saved = run(MSTCLIPIQAReward(model))
    try:
        ckpt, ckpt_saved = run(MSTCLIPIQAReward(model, gradient_checkpointing=True))
    finally:
        model.coarse.set_grad_checkpointing(False)
        model.fine.set_grad_checkpointing(False)
    assert torch.allclose(plain, ckpt, atol=1e-6)
    assert ckpt_saved < 0.5 * plain_saved


def test_score_accepts_paths_pil_arrays_and_folders(reward_a, tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(3)]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(array).save(paths[-1])
    from_paths = reward_a.score(paths)
    from_pil = reward_a.score([Image.fromarray(a) for a in arrays])
    from_arrays = reward_a.score(arrays, batch_size=2)
    from_folder = reward_a.score(tmp_path)
    assert from_paths.shape == (3,) and not from_paths.requires_grad
    for other in (from_pil, from_arrays, from_folder):
        assert torch.allclose(from_paths, other, atol=1e-6)
    with pytest.raises(ValueError, match="image file not found"):
        reward_a.score([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="they look like 0..255 pixels: divide by 255"):
        reward_a.score([arrays[0].astype(np.float64)])


def test_score_broadcasts_one_prompt(reward_b):
    images = [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8)]
    assert torch.allclose(reward_b.score(images, "a cat"), reward_b.score(images, ["a cat", "a cat"]))


def test_score_reads_tensors_in_the_input_range(tiny_models):
    reward = MSTCLIPIQAReward(tiny_models("A"), input_range=(-1, 1))
    images = torch.rand(2, 3, 64, 64)
    direct = reward(images * 2 - 1)
    assert torch.allclose(reward.score(images * 2 - 1), direct, atol=1e-5)
    pil = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in images]
    assert torch.allclose(reward.score(pil), direct, atol=0.05)  # files and PIL images are always [0, 1]
    with pytest.raises(ValueError, match="outside input_range"):
        reward.score([images[0] * 3])


def test_score_and_call_apply_the_same_rules(reward_a):
    binary = torch.randint(0, 2, (2, 3, 64, 64), dtype=torch.uint8)  # uint8 always means 0..255, never [0, 1]
    with pytest.raises(ValueError, match=r"images.float\(\) / 255"):
        reward_a(binary)
    as_float = binary.float() / 255
    assert torch.equal(reward_a.score(binary), reward_a.score(as_float))
    torch.testing.assert_close(reward_a.score(binary), reward_a(as_float).detach(), atol=1e-6, rtol=0)
    for bad, message in [(binary.bool(), "torch.bool"), (as_float * 2 - 1, r"input_range=\(-1, 1\)"),
                         (torch.full((1, 3, 64, 64), float("nan")), "NaN or inf")]:
        with pytest.raises(ValueError, match=message):
            reward_a(bad)
        with pytest.raises(ValueError, match=message):
            reward_a.score(bad)


@pytest.mark.parametrize("options, message", [
    ({"input_range": (0, float("inf"))}, r"input_range .* is \(0.0, inf\); expected finite numbers with low < high"),
    ({"input_range": (float("nan"), 1)}, r"is \(nan, 1.0\); expected finite numbers with low < high"),
    ({"input_range": (1, 0)}, r"is \(1.0, 0.0\); expected finite numbers with low < high"),
    ({"input_range": (0, 1, 2)}, r"is \(0, 1, 2\); expected a \(low, high\) pair of numbers"),
    ({"tolerance": -0.1}, "tolerance must be a finite number >= 0 .*got -0.1"),
    ({"tolerance": float("nan")}, "tolerance must be a finite number >= 0 .*got nan"),
])
def test_bad_reward_options_are_refused_at_construction(tiny_models, options, message):
    with pytest.raises(ValueError, match=message):
        MSTCLIPIQAReward(tiny_models("A"), **options)


def test_nothing_to_score_is_named(reward_a, tmp_path):
    with pytest.raises(ValueError, match="no images to score: got an empty list"):
        reward_a.score([])
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=f"no images to score: folder {tmp_path} holds no image files"):
        reward_a.score(tmp_path)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        reward_a.score(torch.rand(1, 3, 64, 64), batch_size=0)


def test_every_input_form_gives_the_same_scores(reward_a):
    pixels = torch.randint(0, 256, (3, 3, 48, 64), dtype=torch.uint8)
    expected = reward_a(pixels.float() / 255).detach()
    nhwc = pixels.permute(0, 2, 3, 1)
    forms = {"float NCHW": pixels.float() / 255, "float NHWC": nhwc.float() / 255, "uint8 NCHW": pixels,
             "uint8 NHWC": nhwc, "numpy uint8 NHWC": nhwc.numpy(), "numpy float NCHW": pixels.numpy() / 255.0,
             "PIL list": [Image.fromarray(a) for a in nhwc.numpy()], "list of arrays": list(nhwc.numpy()),
             "list of (3, H, W) tensors": list(pixels), "channels-last strides": (pixels.float() / 255).to(
                 memory_format=torch.channels_last)}
    for name, images in forms.items():
        torch.testing.assert_close(reward_a.score(images), expected, atol=1e-5, rtol=0, msg=name)
    with pytest.raises(ValueError, match=r"shape \(3, 5, 48, 64\) have no axis of 3 \(RGB\) channels"):
        reward_a.score(torch.rand(3, 5, 48, 64))
    with pytest.raises(ValueError, match="images of dtype torch.int64 are ambiguous"):
        reward_a.score(pixels.long())


def test_compiled_towers_match_the_eager_reward_as_batch_sizes_change():
    # aot_eager: dynamo capture and AOT autograd (forward and backward graphs) as with inductor, without
    # code generation (inductor on CPU needs ~80 s here; measured differences: scores 5e-6, gradients 2e-6)
    import copy

    torch.manual_seed(0)
    plain = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny()))
    torch.manual_seed(0)
    compiled = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny()), compile={"backend": "aot_eager"})
    for batch in (2, 3, 5):  # 3: one recompilation with a symbolic batch size; 5 reuses it
        images = torch.rand(batch, 3, 80, 100, requires_grad=True)
        scores = compiled(images)
        (grad,) = torch.autograd.grad(scores.sum(), images)
        expected = plain(images)
        (expected_grad,) = torch.autograd.grad(expected.sum(), images)
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)
    twin = copy.deepcopy(compiled)
    assert twin.model.fine.encode_image.__self__ is twin.model.fine  # a copy runs its own weights


def test_compile_option_must_be_a_flag_a_mode_or_options(tiny_models):
    with pytest.raises(ValueError, match="compile must be True/False, a torch.compile mode name or a dict"):
        MSTCLIPIQAReward(tiny_models("A"), compile=1)
