"""Diffusion-DPO rows checked when they are opened: every row, before the first step.

A row is ``caption`` (text), ``jpg_0`` / ``jpg_1`` (encoded image bytes or PIL images, two different
images) and ``label_0``: 1 when ``jpg_0`` is preferred, 0 when ``jpg_1`` is. Soft labels are not read:
``label_0 = 0.5`` is a tie (Pick-a-Pic has them) and states no preference; any other value is invalid.
Images are checked by their headers here (decoded when drawn, where a failure names its row).
"""

from __future__ import annotations

import io
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["COLUMNS", "check_pairs", "row_problem"]

COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
TIE = "tie"
_SHOWN = 5  # rows named per kind of problem


def row_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with one Diffusion-DPO row (``"tie"`` for ``label_0 = 0.5``), or None."""
    missing = [c for c in COLUMNS if row.get(c) is None]
    if missing:
        return f"{', '.join(missing)} missing or None"
    label = row["label_0"]
    if not isinstance(label, numbers.Real) or isinstance(label, bool) or not math.isfinite(label):
        return f"label_0 is {label!r} (expected 0 or 1)"
    if label == 0.5:
        return TIE
    if label not in (0, 1):
        return f"label_0 is {label!r} (expected 0 or 1; 0.5 is a tie)"
    if not isinstance(row["caption"], str):
        return f"caption is a {type(row['caption']).__name__} (expected text)"
    for column in ("jpg_0", "jpg_1"):
        problem = _image_problem(row[column])
        if problem:
            return f"{column} {problem}"
    if _same(row["jpg_0"], row["jpg_1"]):
        return "jpg_0 and jpg_1 are the same image (no preference to learn)"
    return None


def _image_problem(data: Any) -> str | None:
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, Image.Image):
        return None
    if not isinstance(data, (bytes, bytearray)):
        return f"is a {type(data).__name__} (expected encoded image bytes or a PIL image)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"is not a readable image ({len(data)} bytes: {error})"
    return None


def _same(first: Any, second: Any) -> bool:
    if isinstance(first, (bytes, bytearray)) or isinstance(second, (bytes, bytearray)):
        return first == second
    return first.size == second.size and first.mode == second.mode and first.tobytes() == second.tobytes()


def _iter_rows(rows: Any) -> Iterator[Mapping[str, Any]]:
    columns = getattr(rows, "column_names", None)
    if columns is None:  # a list of dicts
        yield from rows
        return
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"the pairs lack the column(s) {missing}; expected Diffusion-DPO rows with the columns "
                         f"{list(COLUMNS)} (label_0 = 1 when jpg_0 is preferred)")
    for batch in rows.select_columns(list(COLUMNS)).iter(batch_size=256):
        yield from (dict(zip(batch, values)) for values in zip(*batch.values()))


def _named(problems: list[tuple[int, str]]) -> str:
    shown = "; ".join(f"row {i}: {p}" for i, p in problems[:_SHOWN])
    return shown + ("; ..." if len(problems) > _SHOWN else "")


def check_pairs(rows: Any, *, drop_invalid: bool = False, drop_ties: bool = False) -> Any:
    """``rows`` (a ``datasets.Dataset`` or a list of Diffusion-DPO rows) after checking every one: a
    ``ValueError`` names the count and first rows of each problem, unless ``drop_invalid`` (malformed rows)
    and ``drop_ties`` (``label_0 = 0.5``) drop them, with a warning that counts what was dropped."""
    if type(rows).__name__ == "IterableDataset":
        raise ValueError("the pairs are a streaming datasets.IterableDataset; Diffusion-DPO draws pairs at random "
                         "and needs random access: load them without streaming=True, or take a part into memory: "
                         "datasets.Dataset.from_list(list(pairs.take(N)))")
    if len(rows) == 0:
        raise ValueError("the pairs are empty; expected Diffusion-DPO rows (jpg_0, jpg_1, label_0, caption)")
    invalid, ties = [], []
    for index, row in enumerate(_iter_rows(rows)):
        problem = row_problem(row)
        if problem is not None:
            (ties if problem == TIE else invalid).append((index, problem))
    errors = []
    if invalid and not drop_invalid:
        errors.append(f"{len(invalid)} of {len(rows)} pairs are invalid ({_named(invalid)}): fix them, or drop them "
                      "with --drop-invalid (drop_invalid=True)")
    if ties and not drop_ties:
        errors.append(f"{len(ties)} of {len(rows)} pairs are ties (label_0 = 0.5, no preference; rows "
                      f"{', '.join(str(i) for i, _ in ties[:_SHOWN])}{', ...' if len(ties) > _SHOWN else ''}): "
                      "drop them with --drop-ties (drop_ties=True)")
    if errors:
        raise ValueError("; ".join(errors))
    dropped = {i for i, _ in invalid + ties}
    if not dropped:
        return rows
    if len(dropped) == len(rows):
        raise ValueError(f"all {len(rows)} pairs are invalid or ties ({_named(invalid + ties)}); nothing to train on")
    keep = [i for i in range(len(rows)) if i not in dropped]
    warnings.warn(f"dropped {len(dropped)} of {len(rows)} pairs ({len(invalid)} invalid, {len(ties)} ties"
                  f"{'; ' + _named(invalid) if invalid else ''}); training on {len(keep)}", stacklevel=3)
    return rows.select(keep) if hasattr(rows, "select") else [rows[i] for i in keep]
