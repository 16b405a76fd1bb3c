"""The allocation tracker counts the storages a block creates, not views of the ones it was handed."""

import pytest
import torch

from mst_clipiqa.integrations.planner import AllocationTracker


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_frozen_weights_transpose_saved_for_backward_is_no_allocation(device):
    weight = torch.randn(1024, 1024, device=device)  # 4 MiB, from before the block
    x = torch.randn(8, 1024, device=device, requires_grad=True)
    with AllocationTracker() as tracker:
        y = torch.nn.functional.linear(torch.nn.functional.linear(x, weight), weight)
        y.sum().backward()
    # alive at once at most: two (8, 1024) fp32 outputs and their two gradients, 32 KiB each
    assert 0 < tracker.peak <= 4 * 8 * 1024 * 4
    with AllocationTracker() as copying:
        weight.t().contiguous()  # a real copy still counts
    assert copying.peak == weight.numel() * 4


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
