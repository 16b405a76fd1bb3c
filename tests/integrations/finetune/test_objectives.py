"""The policy losses against their definitions."""

import pytest
import torch

from mst_clipiqa.integrations.finetune import (
    clipped_policy_loss,
    gaussian_kl,
    nft_loss,
    optimality_probability,
    ratio_stats,
)


def test_clipped_loss_at_ratio_one_is_minus_the_mean_advantage_and_clips_beyond_the_range():
    adv = torch.tensor([1.0, -2.0, 0.5])
    old = torch.tensor([-1.0, -2.0, -3.0])
    new = old.clone().requires_grad_(True)
    loss = clipped_policy_loss(new, old, adv, clip_range=0.1)
    assert float(loss.detach()) == pytest.approx(-float(adv.mean()))
    far = (old + torch.tensor([0.5, -0.5, 0.0])).requires_grad_(True)  # ratios e^0.5, e^-0.5, 1
    clipped_policy_loss(far, old, adv, clip_range=0.1).backward()
    assert far.grad[0] == 0 and far.grad[1] == 0 and far.grad[2] < 0  # outside the range, no gradient
    stats = ratio_stats(far.detach(), old, 0.1)
    assert stats["clip_fraction"] == pytest.approx(2 / 3) and stats["approx_kl"] == pytest.approx(0.25 / 3)


def test_gaussian_kl_is_the_kl_of_equal_variance_gaussians_per_element():
    mean, ref = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    std = 0.3
    p, q = torch.distributions.Normal(mean, std), torch.distributions.Normal(ref, std)
    expected = torch.distributions.kl_divergence(p, q).flatten(1).mean(1)
    torch.testing.assert_close(gaussian_kl(mean, ref, std), expected)


def test_nft_loss_pulls_positives_to_the_target_and_pushes_negatives_away():
    x0, noise = torch.randn(2, 8), torch.randn(2, 8)
    target = noise - x0
    v_old = torch.randn(2, 8)
    for r, sign in ((1.0, 1), (0.0, -1)):
        v = v_old.clone().requires_grad_(True)
        loss = nft_loss(v, v_old, x0, noise, torch.full((2,), r), beta=1.0)
        loss.backward()
        step = -v.grad  # gradient descent direction
        assert sign * float((step * (target - v_old)).sum()) > 0
    plain = (v_old - target).pow(2).mean(1).mean()
    assert float(nft_loss(v_old, v_old, x0, noise, torch.rand(2))) == pytest.approx(float(plain))
    assert optimality_probability(torch.tensor([-10.0, 0.0, 2.5])).tolist() == [0.0, 0.5, 0.75]
