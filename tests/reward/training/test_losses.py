import math

import pytest
import torch

from mst_clipiqa.reward.training.losses import mse_rank_loss, pairwise_rank_loss


def reference_loss(pred, target, margin=0.1, lam=1.0):
    """The method doc's definition, spelled out with Python loops over unordered pairs."""
    s, q = pred.tolist(), target.tolist()
    n = len(s)
    mse = sum((s[i] - q[i]) ** 2 for i in range(n)) / n
    terms = []
    for i in range(n):
        for j in range(i + 1, n):
            if q[i] != q[j]:
                sign = math.copysign(1.0, q[i] - q[j])
                terms.append(max(0.0, margin - sign * (s[i] - s[j])))
    rank = sum(terms) / len(terms) if terms else 0.0
    return mse + lam * rank


@pytest.mark.parametrize("seed", range(5))
def test_matches_double_loop(seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(9, generator=g, dtype=torch.float64) * 4 + 1
    target = torch.randint(1, 4, (9,), generator=g).to(torch.float64)  # ties included
    for margin, lam in [(0.1, 1.0), (0.5, 0.3), (2.0, 0.0)]:
        got = mse_rank_loss(pred, target, margin=margin, lam=lam)
        assert got.item() == pytest.approx(reference_loss(pred, target, margin, lam), rel=1e-12)


def test_hand_computed_case():
    pred = torch.tensor([1.0, 2.0, 2.0])
    target = torch.tensor([1.0, 3.0, 2.0])
    # MSE = (0 + 1 + 0) / 3. Pairs with different MOS: (0,1): relu(0.1 - 1) = 0;
    # (0,2): relu(0.1 - 1) = 0; (1,2): relu(0.1 - 0) = 0.1 -> mean 0.1/3.
    assert mse_rank_loss(pred, target).item() == pytest.approx(1 / 3 + 0.1 / 3)
    assert pairwise_rank_loss(pred, target).item() == pytest.approx(0.1 / 3)


def test_no_differing_pair_gives_zero_rank_term_and_finite_grad():
    pred = torch.tensor([0.5, 1.5, 2.5], requires_grad=True)
    target = torch.full((3,), 2.0)
    rank = pairwise_rank_loss(pred, target)
    assert rank.item() == 0.0
    loss = mse_rank_loss(pred, target)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.allclose(pred.grad, 2 * (pred.detach() - 2.0) / 3)
    single = torch.tensor([3.0], requires_grad=True)
    mse_rank_loss(single, torch.tensor([1.0])).backward()
    assert single.grad.item() == pytest.approx(4.0)


def test_gradient_matches_finite_differences():
    pred = torch.tensor([1.2, 2.9, 2.0, 4.1], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1.0, 3.0, 2.5, 4.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: mse_rank_loss(p, target, margin=0.3), (pred,))


def test_shapes_and_dtypes():
    pred = torch.tensor([[1.0], [2.0]])
    target = torch.tensor([2, 1])  # integer MOS is cast to pred's dtype
    assert mse_rank_loss(pred, target).item() == pytest.approx(1.0 + 1.1)
    with pytest.raises(ValueError, match="pred has 3 values but target has 2"):
        mse_rank_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="empty batch"):
        mse_rank_loss(torch.zeros(0), torch.zeros(0))


def test_weights_count_each_sample_that_many_times():
    """Bootstrap counts as weights equal the loss over the resample written out (0 drops a sample)."""
    pred, target = torch.tensor([1.0, 2.5, 2.0, 4.0]), torch.tensor([1.5, 2.0, 3.0, 3.5])
    counts = torch.tensor([2, 0, 1, 3])
    torch.testing.assert_close(mse_rank_loss(pred, target, weights=counts.float()),
                               mse_rank_loss(pred.repeat_interleave(counts), target.repeat_interleave(counts)))
