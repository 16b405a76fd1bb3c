"""Quality maps: per-region scores from the fine stream's patch tokens, in the reward's units."""
from __future__ import annotations

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward
from tests.conftest import BACKENDS


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_map_has_one_value_per_fine_patch_and_its_gradient_reaches_only_the_pixels(tiny_models, backend):
    reward = MSTCLIPIQAReward(tiny_models("A", backend))
    images = _images().requires_grad_(True)
    regions = reward.quality_map(images)
    assert regions.shape == (2, 4, 4)  # 64 px, patch 16
    low, high = reward.score_range
    assert bool(((regions >= low) & (regions <= high)).all())
    regions[:, 0, 0].sum().backward()
    assert images.grad.abs().sum() > 0 and bool(images.grad.isfinite().all())
    assert all(p.grad is None for p in reward.model.parameters())


@pytest.mark.parametrize(("variant", "backend", "ensemble", "normalize"),
                         [("A", "open_clip", 1, False), ("A", "transformers", 3, True), ("B", "open_clip", 2, False)])
def test_with_the_pooled_embedding_in_every_region_the_map_is_the_score(variant, backend, ensemble, normalize,
                                                                        monkeypatch):
    """The relation docs/uncertainty.md states: a region is scored exactly as the image is, with its patch token
    in place of the fine stream's pooled embedding (same gate, heads, ensemble members, output weights, units)."""
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant, backend=backend, ensemble=ensemble, init="random"))
    reward = MSTCLIPIQAReward(model, normalize=normalize)
    tokens = model.fine.encode_image_tokens

    def pooled_everywhere(pixels):
        pooled, grid = tokens(pixels)
        return pooled, pooled[:, None, None].expand_as(grid)

    images, prompts = _images(3), ["a red circle", "a blue square on a striped background", "fog"]
    monkeypatch.setattr(model.fine, "encode_image_tokens", pooled_everywhere)
    regions = reward.quality_map(images, prompts)
    score = reward(images, prompts)
    torch.testing.assert_close(regions, score[:, None, None].expand_as(regions), rtol=1e-5, atol=1e-5)
    monkeypatch.undo()
    assert not torch.allclose(reward.quality_map(images, prompts), regions, atol=1e-3)  # the real tokens differ


def test_region_score_is_a_soft_minimum_between_the_worst_region_and_the_mean(tiny_models):
    reward = MSTCLIPIQAReward(tiny_models("A"))
    images = _images(3)
    regions = reward.quality_map(images).flatten(1)
    sharp, soft = reward.region_score(images, temperature=1e-3), reward.region_score(images, temperature=1e3)
    torch.testing.assert_close(sharp, regions.min(1).values, atol=1e-2, rtol=0)
    torch.testing.assert_close(soft, regions.mean(1), atol=1e-3, rtol=0)
    middle = reward.region_score(images)
    assert bool((middle >= regions.min(1).values - 1e-5).all() and (middle <= regions.mean(1) + 1e-5).all())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        reward.region_score(images, temperature=0)
