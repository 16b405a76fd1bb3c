"""Head training and evaluation on cached features run with the thread policy, and restore torch's setting."""
from __future__ import annotations

import pytest
import torch

from mst_clipiqa.reward.training import TrainConfig
from mst_clipiqa.reward.training.threads import head_threads


@pytest.mark.parametrize(("threads", "device", "inside"), [(None, "cpu", 1), (2, "cpu", 2), (None, "cuda", None)])
def test_policy_applies_inside_and_restores(threads, device, inside):
    torch.set_num_threads(3)
    try:
        with head_threads(threads, torch.device(device)):
            seen = torch.get_num_threads()
        assert seen == (inside if inside is not None else 3)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)


def test_bad_thread_count_is_named():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        TrainConfig(threads=0)
