"""Calibrated mixing: each reward through its own running quantiles."""
from __future__ import annotations

import pytest
import torch

from mst_clipiqa.integrations.finetune.mixing import QuantileMixer


def test_quantiles_count_the_buffer_below_and_half_the_ties():
    mixer = QuantileMixer(buffer_size=8)
    first = mixer.quantiles("a", torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert first.tolist() == [0.125, 0.375, 0.625, 0.875]
    second = mixer.quantiles("a", torch.tensor([2.5, float("nan")]))  # the buffer: 1, 2, 3, 4, 2.5
    assert second[0].item() == pytest.approx(0.5) and bool(second[1].isnan())


def test_rewards_on_different_scales_mix_by_rank_and_the_buffers_resume():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, generator=generator), torch.randn(6, generator=generator)
    mixed = QuantileMixer()({"a": a, "b": b}, {"a": 1.0, "b": 2.0})
    rescaled = QuantileMixer()({"a": 1000 * a + 7, "b": b}, {"a": 1.0, "b": 2.0})
    torch.testing.assert_close(mixed, rescaled)  # a plain weighted sum would be a's alone
    mixer = QuantileMixer(buffer_size=4)
    mixer({"a": a})
    resumed = QuantileMixer(buffer_size=4)
    resumed.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(resumed({"a": b}), mixer({"a": b}))
    with pytest.raises(ValueError, match="reward weights name"):
        mixer({"a": a}, {"c": 1.0})
