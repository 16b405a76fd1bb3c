"""Diffusion-DPO rows checked when they are opened, before the first step: every row up to
:data:`CHECK_ALL_UP_TO` rows, above that a fixed random sample of that many (``check_rows``: ``"all"`` or N).

A row is ``caption`` (text), ``jpg_0`` / ``jpg_1`` (encoded image bytes or PIL images, two different
images) and ``label_0``: 1 when ``jpg_0`` is preferred, 0 when ``jpg_1`` is. Soft labels are not read:
``label_0 = 0.5`` is a tie (Pick-a-Pic has them) and states no preference; any other value is invalid.
Images are checked by their headers here (decoded when drawn, where a failure names its row). Checking reads
every image header (0.3-0.6 ms a row on a CPU); a row outside a checked sample is checked when it is drawn, and
a bad one stops the run there, naming its row.
"""

from __future__ import annotations

import argparse
import io
import math
import numbers
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["CHECK_ALL_UP_TO", "COLUMNS", "check_pairs", "check_rows_option", "row_problem"]

COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
TIE = "tie"
CHECK_ALL_UP_TO = 100_000  # rows checked by default: all of a smaller set (under a minute), a sample of a larger
_SHOWN = 5  # rows named per kind of problem


class _CheckRowsError(ValueError, argparse.ArgumentTypeError):
    """A bad ``check_rows``: a ValueError for the API, its own message on the command line."""


def check_rows_option(value: Any) -> int | str | None:
    """``check_rows`` as a setting or a flag gives it: None (the default), ``"all"`` or a row count N >= 1."""
    if value is None or value == "all":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1 or count != value and str(count) != str(value).strip():
        raise _CheckRowsError(f"check_rows must be 'all' or a number of rows >= 1, got {value!r}")
    return count


def _sample(total: int, check_rows: int | str | None) -> list[int] | None:
    """The rows to check (None: all), with a one-line notice when they are a sample."""
    size = CHECK_ALL_UP_TO if check_rows is None else check_rows
    if size == "all" or size >= total:
        return None
    default = f" by default (more than {CHECK_ALL_UP_TO:,} rows)" if check_rows is None else ""
    warnings.warn(f"checking a random sample of {size:,} of the {total:,} pairs{default}; a bad row outside it stops "
                  "the run when drawn, naming it: --check-rows all (check_rows='all') checks every row first",
                  stacklevel=4)
    return sorted(random.Random(0).sample(range(total), size))


def row_problem(row: Mapping[str, Any], images: bool = True) -> str | None:
    """What is wrong with one Diffusion-DPO row (``"tie"`` for ``label_0 = 0.5``), or None; ``images=False``
    looks at the caption and the label alone."""
    missing = [c for c in (COLUMNS if images else ("caption", "label_0")) if row.get(c) is None]
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
    if not images:
        return None
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


def _iter_rows(rows: Any, columns: tuple[str, ...] = COLUMNS) -> Iterator[Mapping[str, Any]]:
    columns = getattr(rows, "column_names", None)
    if columns is None:  # a list of dicts
        yield from rows
        return
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"the pairs lack the column(s) {missing}; expected Diffusion-DPO rows with the columns "
                         f"{list(COLUMNS)} (label_0 = 1 when jpg_0 is preferred)")
    for batch in rows.select_columns(list(columns)).iter(batch_size=256):
        yield from (dict(zip(batch, values)) for values in zip(*batch.values()))


def _named(problems: list[tuple[int, str]]) -> str:
    shown = "; ".join(f"row {i}: {p}" for i, p in problems[:_SHOWN])
    return shown + ("; ..." if len(problems) > _SHOWN else "")


def check_pairs(rows: Any, *, drop_invalid: bool = False, drop_ties: bool = False,
                check_rows: int | str | None = None) -> Any:
    """``rows`` (a ``datasets.Dataset`` or a list of Diffusion-DPO rows) after checking them: a ``ValueError``
    names the count and first rows of each problem, unless ``drop_invalid`` (malformed rows) and ``drop_ties``
    (``label_0 = 0.5``) drop them, with a warning that counts what was dropped. ``check_rows``: ``"all"``, N
    (a fixed random sample of N rows) or None: all up to :data:`CHECK_ALL_UP_TO` rows, else a sample of that
    many, with a one-line notice."""
    if type(rows).__name__ == "IterableDataset":
        raise ValueError("the pairs are a streaming datasets.IterableDataset; Diffusion-DPO draws pairs at random "
                         "and needs random access: load them without streaming=True, or take a part into memory: "
                         "datasets.Dataset.from_list(list(pairs.take(N)))")
    if len(rows) == 0:
        raise ValueError("the pairs are empty; expected Diffusion-DPO rows (jpg_0, jpg_1, label_0, caption)")
    picked = _sample(len(rows), check_rows_option(check_rows))
    if picked is not None:  # every caption and label (cheap), the images of the sample
        problems = {i: p for i, row in enumerate(_iter_rows(rows, ("caption", "label_0")))
                    if (p := row_problem(row, images=False)) is not None}
        rows_of = rows.select(picked) if hasattr(rows, "select") else [rows[i] for i in picked]
        problems.update({i: p for i, row in zip(picked, _iter_rows(rows_of))
                         if i not in problems and (p := row_problem(row)) is not None})
    else:
        problems = {i: p for i, row in enumerate(_iter_rows(rows)) if (p := row_problem(row)) is not None}
    invalid = [(i, p) for i, p in sorted(problems.items()) if p != TIE]
    ties = [(i, p) for i, p in sorted(problems.items()) if p == TIE]
    errors, of = [], f"{len(rows)}" if picked is None else f"{len(rows)} (images: a sample of {len(picked)})"
    if invalid and not drop_invalid:
        errors.append(f"{len(invalid)} of {of} pairs are invalid ({_named(invalid)}): fix them, or drop them "
                      "with --drop-invalid (drop_invalid=True)")
    if ties and not drop_ties:
        errors.append(f"{len(ties)} of {of} pairs are ties (label_0 = 0.5, no preference; row{'s' * (len(ties) > 1)} "
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
