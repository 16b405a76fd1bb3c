"""``load_model``: a name, folder or Hub id in, a ready model out (with adapters, on a device, in eval mode)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .adapters import load_adapter
from .hub import check_hub_kwargs
from .mstclipiqa import MSTCLIPIQA


def load_model(name_or_path: str | Path, *, variant: str | None = None, outputs: Sequence[str] | None = None,
               seed: int = 0, adapters: Sequence[str | Path] = (), device: torch.device | str | None = None,
               **hub_kwargs: Any) -> MSTCLIPIQA:
    """A model by name (``tiny``, ``tiny-hf``, ``paper-A``, ``paper-B``), ``save_pretrained`` directory or
    Hub id, with the LoRA ``adapters`` loaded (the last one active), on ``device``, in eval mode.

    ``variant`` / ``outputs`` / ``seed`` and the Hub keywords (``revision``, ``cache_dir``,
    ``local_files_only``, ``token``, ``force_download``): see :meth:`MSTCLIPIQA.from_pretrained`.
    """
    hub_kwargs = check_hub_kwargs(hub_kwargs, "load_model")
    model = MSTCLIPIQA.from_pretrained(name_or_path, variant=variant, outputs=outputs, seed=seed, **hub_kwargs)
    for directory in adapters:
        load_adapter(model, directory)
    if device is not None:
        model.to(device)
    return model.eval()
