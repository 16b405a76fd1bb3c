"""What each output would have had from its own best validation epoch, next to the one epoch a joint run keeps.

A joint run (several outputs, one fusion) keeps one epoch for all outputs: the best
mean validation ``select_metric``. Each split's result says so and lists, per output,
the epoch that was best for it alone and that epoch's validation value, so a user can
see what the shared choice cost each output.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def per_output_best(history: Sequence[dict[str, Any]], outputs: Sequence[str], metric: str,
                    chosen_epoch: int) -> dict[str, dict[str, Any]]:
    """Per output: its own best epoch and validation value, and its value at ``chosen_epoch`` (1-based)."""
    result = {}
    for output in outputs:
        values = [r["val"][output][metric] if r.get("val") else float("nan") for r in history]
        finite = np.isfinite(values)
        own = int(np.nanargmax(np.where(finite, values, np.nan))) + 1 if finite.any() else None
        chosen = values[chosen_epoch - 1] if 0 < chosen_epoch <= len(values) else float("nan")
        result[output] = {"own_best_epoch": own, "own_best_val": values[own - 1] if own else None,
                          "chosen_epoch_val": chosen if np.isfinite(chosen) else None}
    return result
