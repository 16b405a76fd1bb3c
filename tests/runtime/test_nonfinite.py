"""The non-finite guard both trainers share: counts of NaN / inf per value, and weights refused in one line."""

import pytest
import torch

from mst_clipiqa.runtime.nonfinite import NonFiniteError, check_finite_weights, nonfinite_counts


class OneProcess:
    device, num_processes = torch.device("cpu"), 1


def test_only_the_values_holding_nan_or_inf_are_counted():
    values = {"reward": torch.tensor([1.0, float("nan"), float("inf")]), "loss": torch.tensor(0.5),
              "images": torch.zeros(2, 3, 4, 4)}
    assert nonfinite_counts(OneProcess(), values) == {"reward": (2, 3)}


def test_weights_holding_nan_are_refused_naming_where_the_first_tensors_and_the_advice():
    weights = {"lora.a": torch.ones(2), "lora.b": torch.tensor([0.0, float("-inf")]), "step": torch.tensor(3)}
    check_finite_weights({"lora.a": torch.ones(2)}, "not writing it", "try less")  # finite: nothing to say
    with pytest.raises(NonFiniteError, match=r"^not writing it: 1 tensor\(s\) hold NaN or inf, first: \['lora.b'\]; "
                                             r"try less$"):
        check_finite_weights(weights, "not writing it", "try less")
    assert issubclass(NonFiniteError, ValueError)  # what the IQA trainer raised before it shared this guard
