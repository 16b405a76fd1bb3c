"""Non-finite values stopped where they start: a step's reward, loss or gradient norm, and the weights before any
checkpoint or result is written."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mst_clipiqa.reward.utils import nonfinite_names

from .config import ON_NONFINITE

__all__ = ["NonFiniteError", "ON_NONFINITE", "SKIP_LIMIT", "nonfinite_counts", "describe_nonfinite",
           "check_finite_weights"]

SKIP_LIMIT = 10  # batches dropped in a row before a skipping run gives up: the weights no longer give numbers

ADVICE = ("try a lower learning_rate (--learning-rate) or max_grad_norm, a reward that is finite on these images, "
          "or on_nonfinite='skip' (--on-nonfinite skip) to drop such batches")


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


def describe_nonfinite(bad: Mapping[str, tuple[int, int]], step: int) -> str:
    """``reward returned NaN or inf for 1 of 2 images, loss non-finite at step 3``."""
    parts = []
    for name, (k, n) in bad.items():
        if name == "images":
            parts.append(f"the denoiser gave NaN or inf images for {k} of {n} (its LoRA weights diverged)")
        elif name.startswith("reward"):
            parts.append(f"{name} returned NaN or inf for {k} of {n} image(s)")
        else:
            parts.append(f"{name} non-finite")
    return f"{', '.join(parts)} at step {step}"


def check_finite_weights(tensors: Mapping[str, torch.Tensor], step: int, what: str) -> None:
    """A :class:`NonFiniteError` before ``what`` (a checkpoint, the LoRA) is written from weights holding NaN / inf."""
    bad = nonfinite_names(tensors)
    if bad:
        raise NonFiniteError(f"not writing {what}: {len(bad)} tensor(s) hold NaN or inf at step {step}, first: "
                             f"{bad[:3]}; training diverged; {ADVICE}")
