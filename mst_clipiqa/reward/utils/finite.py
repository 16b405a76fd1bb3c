"""Finding NaN / inf in named tensors: for weights, checkpoints and adapters before they are used or written."""
from __future__ import annotations

from collections.abc import Mapping

import torch


def nonfinite_names(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors in ``tensors`` that hold a NaN or inf, in order."""
    return [name for name, t in tensors.items()
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())
            and not bool(torch.isfinite(t.detach()).all())]


def check_finite_tensors(tensors: Mapping[str, torch.Tensor], where: object) -> None:
    """A ``ValueError`` naming ``where`` (a file, a checkpoint, ...) and the first non-finite tensors, if any."""
    bad = nonfinite_names(tensors)
    if bad:
        raise ValueError(f"{where} holds NaN or inf values in {len(bad)} tensor(s), first: {bad[:5]}; "
                         "expected finite weights (the file is damaged, or training diverged)")
