"""Repeated random train/val/test splits (the field's protocol: ten seeded 8:2 splits).

Fractions are of the whole dataset: with the defaults, 20% test, 10% validation
(carved from the non-test part, never from test) and 70% train. With
``by="prompt"`` whole groups (prompts) are assigned to one part, so the part
sizes are as close to the fractions as the group sizes allow. Split ``k`` of a
seed does not depend on ``n_splits``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import write_json

FORMAT = "mst-clipiqa-splits"
VERSION = 1
BY_CHOICES = ("image", "prompt")


@dataclass(frozen=True)
class Split:
    """Index lists of one split; ``n`` is the dataset size the indices refer to."""

    train: list[int]
    val: list[int]
    test: list[int]
    n: int
    by: str = "image"
    seed: int | None = None
    test_fraction: float | None = None
    val_fraction: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(f"invalid split: {problem}")

    def check_groups(self, groups: Sequence[str]) -> None:
        """Raise ``ValueError`` if a group has samples in more than one part."""
        if len(groups) != self.n:
            raise ValueError(f"split is for n={self.n} samples but {len(groups)} groups were given")
        owner: dict[str, str] = {}
        for part in ("train", "val", "test"):
            for i in getattr(self, part):
                other = owner.setdefault(groups[i], part)
                if other != part:
                    raise ValueError(f"group {groups[i]!r} is in both {other} and {part}")


def _problem(split: Split) -> str | None:
    if split.by not in BY_CHOICES:
        return f"by={split.by!r}; expected one of {BY_CHOICES}"
    if not isinstance(split.n, int) or split.n < 1:
        return f"n={split.n!r}; expected a positive integer"
    seen: dict[int, str] = {}
    for part in ("train", "val", "test"):
        indices = getattr(split, part)
        if not isinstance(indices, list):
            return f"{part} is {type(indices).__name__}; expected a list of integers"
        for i in indices:
            if not isinstance(i, int) or isinstance(i, bool):
                return f"{part} holds {i!r}; expected integers"
            if not 0 <= i < split.n:
                return f"{part} holds index {i}, out of range 0..{split.n - 1}"
            if i in seen:
                return f"index {i} appears in {seen[i]} and {part}" if seen[i] != part \
                    else f"index {i} appears twice in {part}"
            seen[i] = part
    if not split.train or not split.test:
        return f"train has {len(split.train)} and test {len(split.test)} indices; both must be non-empty"
    return None


def _resolve_groups(dataset_or_n: Any, by: str, groups: Sequence[str] | None) -> tuple[int, list[str]]:
    n = dataset_or_n if isinstance(dataset_or_n, int) else len(dataset_or_n)
    if by == "image":
        return n, [str(i) for i in range(n)]
    if groups is None:
        if not hasattr(dataset_or_n, "groups"):
            raise ValueError("by='prompt' needs groups: pass groups= or a dataset with .groups()")
        groups = dataset_or_n.groups()
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups given for {n} samples; expected one per sample")
    return n, list(groups)


def _take(order: Sequence[str], sizes: dict[str, int], target: float) -> int:
    """How many groups from the front of ``order`` bring the count closest to ``target``."""
    total, k = 0, 0
    while k < len(order) and total + sizes[order[k]] <= target:
        total += sizes[order[k]]
        k += 1
    if k < len(order) and (total + sizes[order[k]] - target) < (target - total):
        k += 1
    return k


def _val_groups(order: Sequence[str], sizes: dict[str, int], val_fraction: float, n: int) -> int:
    """How many groups from the front of ``order`` form the validation part (one at least, one left to train)."""
    n_val = _take(order, sizes, val_fraction * n)
    return min(max(n_val, 1), len(order) - 1) if val_fraction > 0 else n_val


def split_rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream of split ``key`` of ``seed``: spawned, so that no other seeded draw of the
    project (``default_rng([seed, 2])`` made the synthetic set's prompt mismatches) can coincide with it."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def carve_validation(train: Sequence[int], groups: Sequence[str], val_fraction: float, seed: int = 0,
                     k: int = 0) -> tuple[list[int], list[int]]:
    """Split ``train`` into (train, val): whole groups, in seeded random order (stream ``(seed, k)``), until
    validation holds about ``val_fraction`` of all ``len(groups)`` samples (as in :func:`make_splits`)."""
    members: dict[str, list[int]] = {}
    for i in train:
        members.setdefault(groups[i], []).append(i)
    names = list(members)
    if val_fraction > 0 and len(names) < 2:
        raise ValueError(f"{len(names)} group(s) in the training part; need 2 to carve a validation part")
    order = [names[j] for j in split_rng(seed, k, 1).permutation(len(names))]
    n_val = _val_groups(order, {g: len(m) for g, m in members.items()}, val_fraction, len(groups))
    val = sorted(i for g in order[:n_val] for i in members[g])
    return sorted(i for g in order[n_val:] for i in members[g]), val


def make_splits(
    dataset_or_n: Any,
    n_splits: int = 10,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    by: str = "image",
    groups: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Split]:
    """``n_splits`` seeded random splits of a dataset (or of ``range(n)``).

    ``by="prompt"`` keeps each group in one part; groups come from ``groups``
    or ``dataset.groups()``. Each part gets at least one group (val may be
    empty only when ``val_fraction`` is 0).
    """
    if by not in BY_CHOICES:
        raise ValueError(f"by={by!r}; expected one of {BY_CHOICES}")
    if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(
            f"test_fraction={test_fraction}, val_fraction={val_fraction}; expected "
            "0 < test_fraction, 0 <= val_fraction and test_fraction + val_fraction < 1"
        )
    if n_splits < 1:
        raise ValueError(f"n_splits={n_splits}; expected at least 1")
    n, group_of = _resolve_groups(dataset_or_n, by, groups)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(group_of):
        members.setdefault(g, []).append(i)
    names = list(members)
    needed = 3 if val_fraction > 0 else 2
    if len(names) < needed:
        unit = "samples" if by == "image" else "groups"
        raise ValueError(f"{len(names)} {unit}; need at least {needed} for train/val/test")
    sizes = {g: len(m) for g, m in members.items()}
    splits = []
    for k in range(n_splits):
        order = [names[j] for j in split_rng(seed, k).permutation(len(names))]
        n_test = min(max(_take(order, sizes, test_fraction * n), 1), len(order) - needed + 1)
        rest = order[n_test:]
        n_val = _val_groups(rest, sizes, val_fraction, n)
        parts = order[:n_test], rest[:n_val], rest[n_val:]
        test, val, train = (sorted(i for g in part for i in members[g]) for part in parts)
        splits.append(Split(train, val, test, n, by, seed, test_fraction, val_fraction,
                            {"split_index": k}))
    return splits


def without_validation(split: Split) -> Split:
    """``split`` with its validation part joined to the training part (``val_fraction`` 0)."""
    return Split(sorted(split.train + split.val), [], split.test, split.n, split.by, split.seed,
                 split.test_fraction, 0.0, split.meta)


def save_splits(splits: Sequence[Split], path: str | Path) -> None:
    """Write splits as JSON, with their shared metadata (n, by, seed, fractions)."""
    if not splits:
        raise ValueError("save_splits: no splits to save")
    head = splits[0]
    keys = ("n", "by", "seed", "test_fraction", "val_fraction")
    for k, s in enumerate(splits):
        differing = [key for key in keys if getattr(s, key) != getattr(head, key)]
        if differing:
            raise ValueError(f"split {k} differs from split 0 in {differing}; expected one split set")
    document = {"format": FORMAT, "version": VERSION, **{key: getattr(head, key) for key in keys},
                "splits": [{"train": s.train, "val": s.val, "test": s.test, "meta": s.meta}
                           for s in splits]}
    write_json(path, document)


def load_splits(
    path: str | Path, n: int | None = None, groups: Sequence[str] | None = None
) -> list[Split]:
    """Read and validate splits written by :func:`save_splits`.

    Checks indices are integers in range and the parts disjoint; if ``n`` is
    given, that the file is for ``n`` samples; if ``groups`` is given and the
    file says ``by="prompt"``, that no group straddles two parts.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read splits JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path}: not a splits file; expected a JSON object with format {FORMAT!r}")
    if document.get("version") != VERSION:
        raise ValueError(f"{path}: version {document.get('version')!r}; expected {VERSION}")
    missing = [k for k in ("n", "by", "splits") if k not in document]
    if missing or not isinstance(document["splits"], list) or not document["splits"]:
        raise ValueError(f"{path}: missing {missing or ['splits']}; expected n, by and a "
                         "non-empty list of splits")
    if n is not None and document["n"] != n:
        raise ValueError(f"{path}: splits are for n={document['n']} samples; expected n={n}")
    splits = []
    for k, entry in enumerate(document["splits"]):
        try:
            split = Split(entry["train"], entry["val"], entry["test"], document["n"], document["by"],
                          document.get("seed"), document.get("test_fraction"),
                          document.get("val_fraction"), entry.get("meta", {}))
            if groups is not None and split.by == "prompt":
                split.check_groups(groups)
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{path}: split {k}: {detail}") from None
        splits.append(split)
    return splits

