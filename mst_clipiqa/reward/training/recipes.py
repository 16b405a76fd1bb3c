"""Named training recipes: the reference implementation's setting, and this library's protocol.

``paper`` reproduces the reference code's hyper-parameters field by field:
random fusion and head initialisation, Adam at lr 5e-6 with weight decay 1e-3,
batch 8, 20 epochs, the reference's one 8:2 split by image (``random_split``
with seed 42 over the rows in file order), and the last epoch's raw weights (no
average of them). The
reference seeds neither its initialisation nor its data order, so those match
it in distribution only. The reference picks its best epoch on the test split; that is not
copied (with no validation part the last epoch is used). Its defects that
change no hyper-parameter stay fixed (padding mask, prompt truncation, labels
mapped onto the head's range).

``protocol`` (the default, ``TrainConfig()``) is the field's evaluation
protocol: ten seeded splits, grouped by prompt where the field does so
(AGIQA-3K) and by image elsewhere, 8:2 train/test with a validation part
carved from the train part for model selection, and a learning rate,
schedule and epoch count that move the heads from their zero-shot start
(chosen by ``benchmarks/sweep_recipe.py``; see docs/measured.md), and template
heads' log temperature at its own rate, 0.1 (``benchmarks/bench_template_head.py``;
see docs/template-head.md).
"""
from __future__ import annotations

import math
from typing import Any

PAPER: dict[str, Any] = {
    "init": "random", "optimizer": "adam", "lr": 5e-6, "weight_decay": 1e-3, "schedule": "constant",
    "batch_size": 8, "epochs": 20, "margin": 0.1, "rank_weight": 1.0,
    "n_splits": 1, "split_method": "reference", "split_by": "image", "test_fraction": 0.2, "val_fraction": 0.0,
    "seed": 42, "ema_decay": 0.0,  # the reference keeps its raw weights
    "temperature_lr": None,  # the reference learns tau with everything else, at lr
}
RECIPES: dict[str, dict[str, Any]] = {"protocol": {}, "paper": PAPER}  # protocol: TrainConfig's defaults
PURPOSE = {
    "protocol": "the field's protocol: ten seeded 8:2 splits, selection on validation, heads that learn",
    "paper": "the reference implementation's setting (one 8:2 split, seed 42, last epoch)",
}
SCHEDULES = ("constant", "cosine")
SPLIT_METHODS = ("seeded", "reference")


def lr_factor(schedule: str, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1) of the run (epoch / epochs): 1, or a cosine decay."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0
