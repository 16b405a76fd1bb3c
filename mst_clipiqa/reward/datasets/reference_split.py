"""The reference implementation's one split: ``torch.utils.data.random_split`` with seed 42 over the rows.

The reference code takes ``train_size = int(0.8 * len(dataset))``, the rest for
test, and draws the membership with ``random_split(dataset, [train_size,
test_size], generator=torch.Generator().manual_seed(42))`` over the annotation
rows in file order (AGIQA-3K: 2,385 train / 597 test). The same rows in the same
order give the same membership here; a loader that skipped rows (missing images)
changes it, so those are named in the split's ``meta``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import random_split

from .splits import Split


def reference_split(dataset_or_n: Any, train_fraction: float = 0.8, seed: int = 42) -> Split:
    """The reference's train / test membership over ``range(n)`` (no validation part)."""
    n = dataset_or_n if isinstance(dataset_or_n, int) else len(dataset_or_n)
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction}; expected 0 < train_fraction < 1")
    train_size = int(train_fraction * n)
    if train_size < 1 or train_size >= n:
        raise ValueError(f"{n} samples give {train_size} training and {n - train_size} test samples; "
                         "both parts must be non-empty")
    train, test = random_split(range(n), [train_size, n - train_size], generator=torch.Generator().manual_seed(seed))
    skipped = list(getattr(dataset_or_n, "skipped", []))
    return Split(list(train.indices), [], list(test.indices), n, by="image", seed=seed,
                 test_fraction=round(1 - train_fraction, 12), val_fraction=0.0,
                 meta={"method": "reference random_split", "skipped_rows": skipped})
