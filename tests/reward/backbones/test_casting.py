import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward
from mst_clipiqa.reward.backbones.casting import cast_matmul_weights


def autocast_scores(model: MSTCLIPIQA, images: torch.Tensor) -> torch.Tensor:
    """The reward's computation with plain autocast (weights re-cast on every call)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.encode_images(images)
    return model.score_features(*features)["quality"]


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_cached_weight_casts_give_bitwise_the_autocast_scores_and_gradients(tiny_models, backend):
    model = tiny_models("A", backend)
    reward = MSTCLIPIQAReward(model, dtype=torch.bfloat16)
    images = torch.rand(3, 3, 70, 90, requires_grad=True)
    for _ in range(2):  # the first call fills the cache, the second uses it
        scores = reward(images)
        (grad,) = torch.autograd.grad(scores.sum(), images)
        expected = autocast_scores(model, images)
        (expected_grad,) = torch.autograd.grad(expected.sum(), images)
        assert torch.equal(scores, expected) and torch.equal(grad, expected_grad)


def test_parameters_are_restored_after_the_block_even_on_error(tiny_models):
    fine = tiny_models("A").fine
    before = dict(fine.named_parameters())
    with pytest.raises(RuntimeError, match="inside"), fine.image_weights_in(torch.bfloat16):
        assert fine.model.visual.conv1.weight.dtype == torch.bfloat16
        assert fine.model.visual.class_embedding.dtype == torch.float32  # not a matmul weight: untouched
        raise RuntimeError("inside")
    assert all(p is before[name] and p.dtype == torch.float32 for name, p in fine.named_parameters())
    with fine.image_weights_in(torch.float32):
        assert fine.model.visual.conv1.weight is before["model.visual.conv1.weight"]


def test_a_changed_weight_is_cast_again():
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
    reward = MSTCLIPIQAReward(model, dtype=torch.bfloat16)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        first = reward(images)
        model.coarse.model.visual.conv1.weight.mul_(1.5)  # in place: same tensor, new version
        second = reward(images)
        assert not torch.equal(first, second)
        assert torch.equal(second, autocast_scores(model, images))


def test_weights_off_the_cpu_are_left_to_autocast():
    with torch.device("meta"):
        layer = torch.nn.Linear(4, 4).requires_grad_(False)
    weight = layer.weight
    with cast_matmul_weights(layer, torch.bfloat16, cache := {}):
        assert layer.weight is weight and layer.weight.dtype == torch.float32
    assert cache == {}
