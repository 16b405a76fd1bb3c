"""Non-finite values stopped where they start, in both trainers: a step's values counted over every process, and
weights checked before anything is validated or written from them."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mst_clipiqa.reward.utils import nonfinite_names

__all__ = ["NonFiniteError", "check_finite_weights", "nonfinite_counts"]


class NonFiniteError(ValueError):
    """A NaN or inf in a training step or in the weights; the message says where it arose and what to try."""


def nonfinite_counts(accelerator: Any, values: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """``{name: (non-finite count, count)}`` over every process for the values that hold a NaN or inf.
    Collective: every process passes the same names."""
    local = [[int((~torch.isfinite(v.detach().float())).sum()), v.numel()] for v in values.values()]
    counts = torch.tensor(local, dtype=torch.int64, device=accelerator.device)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, "sum")
    return {name: (k, n) for name, (k, n) in zip(values, counts.tolist()) if k}


def check_finite_weights(tensors: Mapping[str, torch.Tensor], where: str, advice: str) -> None:
    """A :class:`NonFiniteError`, ``<where>: N tensor(s) hold NaN or inf, first: [...]; <advice>``, when ``tensors``
    hold a NaN or inf."""
    if bad := nonfinite_names(tensors):
        raise NonFiniteError(f"{where}: {len(bad)} tensor(s) hold NaN or inf, first: {bad[:3]}; {advice}")
