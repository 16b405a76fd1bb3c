import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mst_clipiqa.reward.utils import check_range, rescale

finite = st.floats(-1e3, 1e3, allow_nan=False)
ranges = st.tuples(finite, st.floats(1e-2, 1e3)).map(lambda t: (t[0], t[0] + t[1]))


@given(ranges, ranges, st.lists(finite, min_size=1, max_size=8))
def test_rescale_maps_ends_onto_ends_and_inverts(source, target, values):
    ends = rescale(np.array(source), source, target)
    assert ends == pytest.approx(target, rel=1e-9, abs=1e-9)
    back = rescale(rescale(np.array(values), source, target), target, source)
    assert back == pytest.approx(values, rel=1e-7, abs=1e-6)


def test_rescale_keeps_gradients():
    x = torch.tensor([0.0, 2.5, 5.0], requires_grad=True)
    rescale(x, (0.0, 5.0), (1.0, 5.0)).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 0.8))


@pytest.mark.parametrize("value, message", [((5, 1), "low < high"), ((0, math.inf), "finite"),
                                            ("0-5", "pair of numbers"), ((1, 2, 3), "pair of numbers")])
def test_check_range_says_what_is_wrong(value, message):
    with pytest.raises(ValueError, match=message):
        check_range(value, "label range")
    assert check_range([0, 5], "label range") == (0.0, 5.0)
