"""``load_model``: a name, folder or Hub id in, a ready model out (with adapters, on a device, in eval mode)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .adapters import load_adapter
from .mstclipiqa import MSTCLIPIQA


def load_model(name_or_path: str | Path, *, variant: str | None = None, outputs: Sequence[str] | None = None,
               seed: int = 0, adapters: Sequence[str | Path] = (), device: torch.device | str | None = None
               ) -> MSTCLIPIQA:
    """A model by name (``tiny``, ``tiny-hf``, ``paper-A``, ``paper-B``), ``save_pretrained`` directory or
    Hub id, with the LoRA ``adapters`` loaded (the last one active), on ``device``, in eval mode.

    ``variant`` / ``outputs`` / ``seed``: see :meth:`MSTCLIPIQA.from_pretrained`.
    """
    model = MSTCLIPIQA.from_pretrained(name_or_path, variant=variant, outputs=outputs, seed=seed)
    for directory in adapters:
        load_adapter(model, directory)
    if device is not None:
        model.to(device)
    return model.eval()
