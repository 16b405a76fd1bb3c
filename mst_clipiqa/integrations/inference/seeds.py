"""Seeds as given: integers only, so a float is never truncated into another candidate's seed."""

from __future__ import annotations

import operator
from collections.abc import Iterable


def check_seeds(seeds: Iterable[object], what: str = "seeds") -> list[int]:
    """The seeds as Python ints (NumPy and torch integers too); a float (even ``3.0``), bool or string is a
    ``ValueError`` naming ``what`` and the value."""
    out = []
    for seed in seeds:
        try:
            if isinstance(seed, bool):
                raise TypeError
            out.append(operator.index(seed))
        except TypeError:
            raise ValueError(f"{what} must be integers, got {seed!r} ({type(seed).__name__})") from None
    return out
