"""Uncertainty with every score: the head's level spread, stream disagreement and an ensemble's spread."""
from __future__ import annotations

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, ScoresWithUncertainty
from mst_clipiqa.reward.scoring.uncertainty import safe_sqrt


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_head_spread_equals_the_variance_of_the_level_distribution_from_the_logits(tiny_models):
    model = tiny_models("A")
    reward = MSTCLIPIQAReward(model)
    images = _images()
    result = reward(images, return_uncertainty=True)
    with torch.no_grad():  # independently: logits -> softmax -> E[k], E[k^2] - E[k]^2 over the levels 1..5
        z = model.fusion(*model.encode_images(images))
        logits = model.heads["quality"].logits(z, model.template_features).double()
        p = logits.softmax(-1)
        k = torch.arange(1, 6, dtype=torch.float64)
        variance = p @ k**2 - (p @ k) ** 2
    torch.testing.assert_close(result.sources["head"].double() ** 2, variance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.scores, reward(images))


def test_the_result_carries_the_coarse_embeddings_of_its_pass_and_score_does_not(tiny_models):
    model = tiny_models("A")
    images = _images()
    result = MSTCLIPIQAReward(model)(images, return_uncertainty=True)
    with torch.no_grad():
        torch.testing.assert_close(result.embeddings, model.encode_images(images)[0])
    assert MSTCLIPIQAReward(model).score(images, return_uncertainty=True).embeddings is None


def test_stream_disagreement_is_half_the_gap_between_the_gate_forced_to_each_stream(tiny_models):
    model = tiny_models("A")
    images = _images()
    result = MSTCLIPIQAReward(model)(images, return_uncertainty=True)
    with torch.no_grad():
        f_c, f_f = model.encode_images(images)
        t, head = model.template_features, model.heads["quality"]
        coarse = head(model.fusion.W_c(f_c), t)  # g = 1
        fine = head(model.fusion.W_f(f_f), t)  # g = 0
    torch.testing.assert_close(result.sources["streams"], (coarse - fine).abs() / 2)


@pytest.mark.parametrize("variant", ["A", "B"])
def test_sigma_is_finite_nonnegative_differentiable_in_the_pixels_and_never_in_the_weights(tiny_models, variant):
    reward = MSTCLIPIQAReward(tiny_models(variant))
    images = _images().requires_grad_(True)
    result = reward(images, ["a red circle", "a cat", "fog"], return_uncertainty=True)
    assert isinstance(result, ScoresWithUncertainty)
    assert result.sigma.shape == (3,) and bool((result.sigma >= 0).all()) and bool(result.sigma.isfinite().all())
    assert set(result.sources) == ({"head", "streams"} if variant == "A" else {"streams"})  # B has no levels
    (result.scores + result.sigma).sum().backward()
    assert images.grad is not None and bool(images.grad.isfinite().all()) and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in reward.model.parameters())


def test_normalize_scales_sigma_with_the_scores_and_batched_scoring_agrees(tiny_models):
    model = tiny_models("A")
    images = _images(5)
    raw = MSTCLIPIQAReward(model)(images, return_uncertainty=True)
    unit = MSTCLIPIQAReward(model, normalize=True)(images, return_uncertainty=True)
    torch.testing.assert_close(unit.sigma, raw.sigma / 4)  # the template range [1, 5] onto [0, 1]
    torch.testing.assert_close(unit.scores, (raw.scores - 1) / 4)
    batched = MSTCLIPIQAReward(model).score(images, batch_size=2, return_uncertainty=True)
    torch.testing.assert_close(batched.sigma, raw.sigma.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.scores, raw.scores.detach(), rtol=1e-5, atol=1e-6)


def _ensemble(k: int) -> MSTCLIPIQA:
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A", ensemble=k, init="random"))


def test_an_ensemble_of_identical_members_has_zero_spread_and_a_finite_gradient():
    model = _ensemble(3)
    for member in model.members:  # every member a copy of member 0
        member.fusion.load_state_dict(model.fusion.state_dict())
        member.heads.load_state_dict(model.heads.state_dict())
    images = _images().requires_grad_(True)
    result = MSTCLIPIQAReward(model)(images, return_uncertainty=True)
    assert torch.equal(result.sources["ensemble"], torch.zeros(3))
    result.sigma.sum().backward()
    assert bool(images.grad.isfinite().all())


def test_members_that_differ_spread_and_the_score_is_their_mean():
    model = _ensemble(3)  # random init: three different members
    images = _images()
    result = MSTCLIPIQAReward(model)(images, return_uncertainty=True)
    with torch.no_grad():
        members = model.member_scores(*model.encode_images(images))[0]["quality"]
    assert bool((result.sources["ensemble"] > 0.01).all())
    torch.testing.assert_close(result.scores, members.mean(0))
    torch.testing.assert_close(result.sources["ensemble"], members.std(0, unbiased=False))


def test_safe_sqrt_has_a_zero_gradient_at_zero():
    v = torch.tensor([0.0, 4.0], requires_grad=True)
    safe_sqrt(v).sum().backward()
    assert v.grad.tolist() == [0.0, 0.25]
