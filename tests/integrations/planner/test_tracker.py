import torch

from mst_clipiqa.integrations.planner import AllocationTracker


def test_a_view_of_a_weight_from_before_the_block_is_no_allocation():
    weight, x = torch.randn(512, 512), torch.randn(2, 512)
    with AllocationTracker() as tracker:
        out = torch.nn.functional.linear(x, weight)  # aten.t(weight) inside: a view, not a copy
    assert tracker.peak == out.untyped_storage().nbytes()


def test_new_storages_count_and_views_of_them_do_not():
    x = torch.randn(256, 256)
    with AllocationTracker() as tracker:
        y = x * 2
        z = y.t().reshape(-1)  # a copy: the transpose is not contiguous
        del y
    assert tracker.peak == 2 * x.untyped_storage().nbytes() and z.numel() == x.numel()
