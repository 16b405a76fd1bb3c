"""Precision names as accelerate spells them, and autocast for them."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("no", "fp16", "bf16")  # names only: the config modules offer them without importing torch


def precision_dtype(precision: str) -> torch.dtype | None:
    """``no`` -> None, ``fp16`` / ``bf16`` -> their dtype."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type; no autocast for None or float32."""
    import torch

    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def no_autocast(device: torch.device) -> AbstractContextManager:
    """An enclosing autocast switched off on ``device``'s type (nothing to switch off on e.g. ``meta``)."""
    import torch

    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()
