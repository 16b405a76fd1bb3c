"""Affine maps between score ranges: a data set's label units and a head's output range."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

Values = TypeVar("Values")
UNIT = (0.0, 1.0)  # the pixel range images are passed around in


def check_range(value: Any, what: str) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair of finite floats with ``low < high``, else a ``ValueError``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {value!r}; expected a (low, high) pair of numbers") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{what} is ({low}, {high}); expected finite numbers with low < high")
    return low, high


def rescale(values: Values, source: Sequence[float], target: Sequence[float]) -> Values:
    """Map ``values`` affinely so that ``source``'s ends land on ``target``'s ends (numbers, arrays or
    tensors; gradients pass through)."""
    (a, b), (c, d) = source, target
    return (values - a) * ((d - c) / (b - a)) + c
