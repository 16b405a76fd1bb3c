"""Reading annotation tables (CSV, xlsx) into samples, with errors that name the file and row."""
from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..scoring import IMAGE_SUFFIXES
from .base import ON_ERROR_CHOICES, PathLike, QualityDataset, QualitySample
from .duplicate_annotations import merge_duplicates

# --------------------------------------------------------------------------- tables


@dataclass
class _Table:
    path: Path
    columns: list[str]
    rows: list[tuple[str, dict[str, Any]]]  # (location such as "line 5", {column: value})


class RowError(ValueError):
    """A problem confined to one annotation row (skippable)."""


def read_csv(path: Path, columns: Sequence[str] | None = None) -> _Table:
    """A CSV with a header row, or without one when ``columns`` names its columns by position."""
    require_file(path)
    try:
        return _parse_csv(path, columns)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot parse as UTF-8 CSV: {exc}") from exc


def read_csv_head(path: Path) -> list[str]:
    """The first row's fields (empty for an empty file)."""
    require_file(path)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        return [field.strip() for field in next(csv.reader(f), [])]


def _parse_csv(path: Path, names: Sequence[str] | None) -> _Table:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = list(names) if names is not None else next(reader, None)
        if header is None:
            raise ValueError(f"{path}: file is empty; expected a header row")
        columns = [h.strip() for h in header]
        rows: list[tuple[str, dict[str, Any]]] = []
        for record in reader:
            if not any(field.strip() for field in record):
                continue
            where = f"line {reader.line_num}"
            if len(record) != len(columns):
                # Recorded as a row and reported when the row is built (skippable).
                rows.append((where, {"__field_count__": len(record)}))
                continue
            rows.append((where, dict(zip(columns, record))))
    return _Table(path, columns, rows)


def read_xlsx_cells(path: Path) -> list[tuple[int, list[Any]]]:
    """Non-empty rows of the first sheet as (1-based sheet row number, cell values)."""
    import openpyxl

    require_file(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises assorted types for non-xlsx input
        raise ValueError(f"{path}: cannot read as an .xlsx workbook: {exc}") from exc
    try:
        sheet = workbook.worksheets[0]
        return [
            (number, list(values))
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)
            if any(v is not None and str(v).strip() for v in values)
        ]
    finally:
        workbook.close()


def read_xlsx(path: Path) -> _Table:
    cells = read_xlsx_cells(path)
    if not cells:
        raise ValueError(f"{path}: first sheet is empty; expected a header row")
    _, header = cells[0]
    columns = ["" if h is None else str(h).strip() for h in header]
    rows = [(f"row {n}", dict(zip(columns, values))) for n, values in cells[1:]]
    return _Table(path, columns, rows)


def require_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"annotation file not found: {path}")


def column_map(table: _Table, wanted: Sequence[str]) -> dict[str, str]:
    """Map each wanted column to the table's column (case and surrounding spaces ignored)."""
    found = {c.casefold(): c for c in table.columns if c}
    missing = [w for w in wanted if w.strip().casefold() not in found]
    if missing:
        raise ValueError(
            f"{table.path}: missing column(s) {missing}; expected columns {list(wanted)}, "
            f"found {[c for c in table.columns if c]}"
        )
    return {w: found[w.strip().casefold()] for w in wanted}


# --------------------------------------------------------------------------- cell parsing


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_score(value: Any, field: str, where: str) -> float:
    """``field`` describes the source, e.g. "column 'MOS'"."""
    try:
        score = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        score = None
    if score is None or not math.isfinite(score):
        text = cell_text(value)
        shown = "empty" if text == "" else repr(value) if isinstance(value, str) else text
        raise RowError(f"{where}: {field} is {shown}; expected a finite number")
    return score


def parse_prompt(value: Any, column: str, where: str) -> str:
    text = value if isinstance(value, str) else cell_text(value)
    if not text.strip():
        raise RowError(f"{where}: column {column!r} is empty; expected the prompt text")
    return text


def resolve_image(name: str, dirs: Sequence[Path], where: str, verify: bool) -> Path:
    """Find ``name`` in the first of ``dirs`` that holds it; check it opens as an image."""
    if not name:
        raise RowError(f"{where}: image name is empty; expected a file name")
    inside = os.path.normpath(name)
    if os.path.isabs(name) or inside == ".." or inside.startswith(".." + os.sep):
        raise RowError(f"{where}: image name {name!r} points outside the data folder; expected a file name (or a "
                       "path below the folder)")
    suffixes = ("",) if Path(name).suffix else IMAGE_SUFFIXES
    for directory in dirs:
        hits = [directory / (name + s) for s in suffixes if (directory / (name + s)).is_file()]
        if len(hits) > 1:
            raise RowError(
                f"{where}: image {name!r} has no extension and matches several files: "
                f"{[str(h) for h in hits]}; expected exactly one"
            )
        if hits:
            if verify:
                verify_image(hits[0], where)
            return hits[0]
    tried = ", ".join(str(d) for d in dirs)
    ext_note = f" (also tried extensions {list(IMAGE_SUFFIXES)})" if suffixes != ("",) else ""
    raise RowError(f"{where}: image {name!r} not found; looked in {tried}{ext_note}")


def verify_image(path: Path, where: str) -> None:
    try:
        with Image.open(path) as im:  # parses the header only
            im.verify()
    except Exception as exc:
        raise RowError(f"{where}: image {path} cannot be read as an image: {exc}") from None


# --------------------------------------------------------------------------- building


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


def build_dataset(
    name: str,
    source: Path,
    rows: Sequence[tuple[str, Any]],
    make: Callable[[str, Any], QualitySample],
    outputs: Sequence[str],
    on_error: str,
    label_ranges: Mapping[str, tuple[float, float]] | None = None,
    split_by: str = "image",
) -> QualityDataset:
    """Turn annotation rows into a dataset, applying the ``on_error`` policy; images listed twice are merged
    (mean of their labels, see ``merge_duplicates``)."""
    _check_on_error(on_error)
    if not rows:
        raise ValueError(f"{source}: no data rows; expected at least one annotated image")
    samples: list[QualitySample] = []
    skipped: list[str] = []
    for where, row in rows:
        try:
            samples.append(make(where, row))
        except RowError as exc:
            if on_error == "raise":
                raise
            skipped.append(str(exc))
    if not samples:
        raise ValueError(
            f"{source}: all {len(rows)} data rows are invalid; first problem: {skipped[0]}"
        )
    if skipped:
        warnings.warn(
            f"{name}: skipped {len(skipped)} of {len(rows)} rows of {source} "
            f"(details in dataset.skipped); first: {skipped[0]}",
            stacklevel=3,
        )
    return QualityDataset(merge_duplicates(name, samples), name, outputs, skipped=skipped,
                          label_ranges=label_ranges, split_by=split_by)


def row_maker(
    table: _Table,
    image_col: str,
    prompt_col: str | None,
    score_cols: Mapping[str, str],
    image_dirs: Sequence[Path],
    verify_images: bool,
    group_of: Callable[[str, dict[str, Any], str], str | None] | None = None,
) -> Callable[[str, dict[str, Any]], QualitySample]:
    wanted = [image_col, *([prompt_col] if prompt_col else []), *score_cols.values()]
    cols = column_map(table, wanted)

    def make(where: str, row: dict[str, Any]) -> QualitySample:
        at = f"{table.path}, {where}"
        if "__field_count__" in row:
            raise RowError(
                f"{at}: found {row['__field_count__']} fields; expected {len(table.columns)} "
                "(as many as header columns)"
            )
        image_name = cell_text(row[cols[image_col]])
        scores = {out: parse_score(row[cols[c]], f"column {c!r}", at) for out, c in score_cols.items()}
        prompt = parse_prompt(row[cols[prompt_col]], prompt_col, at) if prompt_col else ""
        group = group_of(image_name, row, at) if group_of else None
        image = resolve_image(image_name, image_dirs, at, verify_images)
        return QualitySample(image=image, prompt=prompt, scores=scores, group=group, key=image_name)

    return make


def split_root(root: PathLike, default_file: str) -> tuple[Path, Path]:
    """Accept either the dataset folder or its annotation file; return (folder, file)."""
    root = Path(root)
    if root.is_file():
        return root.parent, root
    if not root.exists():
        raise ValueError(f"dataset path not found: {root}")
    return root, root / default_file


def search_dirs(image_root: PathLike | None, defaults: Sequence[Path]) -> list[Path]:
    return [Path(image_root)] if image_root is not None else list(defaults)


