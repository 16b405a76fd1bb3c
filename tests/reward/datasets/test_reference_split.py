"""The paper recipe's split is the reference code's ``random_split`` (seed 42) over the rows in file order."""
from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.data import random_split

from mst_clipiqa.reward.datasets import load_agiqa3k, reference_split


def reference_names(rows: list[str]) -> tuple[list[str], list[str]]:
    """What the reference's loader and split give: int(0.8 n) rows for training, drawn with seed 42."""
    train_size = int(0.8 * len(rows))
    train, test = random_split(rows, [train_size, len(rows) - train_size],
                               generator=torch.Generator().manual_seed(42))
    return list(train), list(test)


def test_counts_on_agiqa3k_size():
    split = reference_split(2982)
    assert (len(split.train), len(split.test), split.val) == (2385, 597, [])


def test_membership_on_the_sample_matches_the_reference(sample_dir):
    with open(sample_dir / "data.csv", newline="") as f:
        rows = [row["name"] for row in csv.DictReader(f)]  # the annotation rows in file order
    dataset = load_agiqa3k(sample_dir)
    split = reference_split(dataset)
    names = [s.image.name for s in dataset.samples]
    train, test = reference_names(rows)
    assert (len(split.train), len(split.test)) == (38, 10)  # int(0.8 * 48) of the 48 rows
    assert [names[i] for i in split.train[:5]] == train[:5]
    assert [names[i] for i in split.test] == test


def test_bad_fraction_is_named():
    with pytest.raises(ValueError, match="train_fraction"):
        reference_split(10, train_fraction=1.0)
    with pytest.raises(ValueError, match="both parts"):
        reference_split(1)
