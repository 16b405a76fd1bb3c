"""Loaders for AGIQA-1K, AGIQA-3K, AIGIQA-20K and generic CSV files."""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import SCORE_NAMES, PathLike, QualityDataset
from .tables import (
    RowError,
    build_dataset,
    cell_text,
    column_map,
    read_csv,
    read_csv_head,
    read_xlsx,
    row_maker,
    search_dirs,
    split_root,
)

MOS_0_5 = (0.0, 5.0)  # the published units of AGIQA-1K, AGIQA-3K and AIGIQA-20K
AIGIQA20K_COLUMNS = ("name", "prompt", "mos")

# --------------------------------------------------------------------------- loaders


def load_csv(
    path: PathLike,
    image_col: str = "image",
    prompt_col: str | None = "prompt",
    score_cols: Mapping[str, str] | None = None,
    image_root: PathLike | None = None,
    group_col: str | None = None,
    name: str | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
    label_range: Sequence[float] | None = None,
) -> QualityDataset:
    """Load a generic annotation CSV.

    ``score_cols`` maps output names (of ``SCORE_NAMES``) to CSV columns;
    default ``{"quality": "mos"}``. Image paths are relative to ``image_root``
    (default: the CSV's folder). ``prompt_col=None`` gives empty prompts;
    ``group_col`` sets the split group (default: prompt text); splits then keep each
    group together by default. ``label_range``
    declares the scores' units, e.g. ``(1, 10)``; by default the span of the labels.
    """
    path = Path(path)
    score_cols = dict(score_cols or {"quality": "mos"})
    unknown = [k for k in score_cols if k not in SCORE_NAMES]
    if unknown:
        raise ValueError(f"score_cols keys {unknown} are not outputs; expected some of {SCORE_NAMES}")
    table = read_csv(path)
    group_of = None
    if group_col is not None:
        gcol = column_map(table, [group_col])[group_col]

        def group_of(_image: str, row: dict[str, Any], _at: str) -> str | None:
            return cell_text(row[gcol]) or None
    make = row_maker(
        table, image_col, prompt_col, score_cols,
        search_dirs(image_root, [path.parent]), verify_images, group_of,
    )
    ranges = dict.fromkeys(score_cols, label_range) if label_range is not None else None
    return build_dataset(name or path.stem, path, table.rows, make, tuple(score_cols), on_error, ranges,
                         split_by="prompt" if group_col else "image")


def load_agiqa1k(
    root: PathLike,
    image_root: PathLike | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
) -> QualityDataset:
    """AGIQA-1K: ``AIGC_MOS_Zscore.xlsx`` (columns ``Image, Prompt, MOS``, MOS in 0-5) -> quality.

    The release lists ``dreamStudio_8_9_1_1.jpg`` twice with two MOS: it is kept once
    with their mean (see ``merge_duplicates``). Splits are by image, as the field's.
    Images are looked up in ``root``, ``root/images`` and ``root/file`` (the
    release's ``file.zip``), in that order, unless ``image_root`` is given.
    """
    folder, sheet = split_root(root, "AIGC_MOS_Zscore.xlsx")
    table = read_xlsx(sheet)
    dirs = search_dirs(image_root, [folder, folder / "images", folder / "file"])
    make = row_maker(table, "Image", "Prompt", {"quality": "MOS"}, dirs, verify_images)
    return build_dataset("agiqa1k", sheet, table.rows, make, ("quality",), on_error, {"quality": MOS_0_5})


_AGIQA3K_PROMPT_ID = re.compile(r"_(\d+)$")


def _agiqa3k_group(image_name: str, _row: dict[str, Any], at: str) -> str:
    match = _AGIQA3K_PROMPT_ID.search(Path(image_name).stem)
    if match is None:
        raise RowError(
            f"{at}: name {image_name!r} has no prompt id; expected a name ending in _NNN "
            "before the extension (e.g. AttnGAN_normal_007.jpg)"
        )
    return match.group(1)


def load_agiqa3k(
    root: PathLike,
    image_root: PathLike | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
) -> QualityDataset:
    """AGIQA-3K: ``data.csv``; ``mos_quality`` -> quality, ``mos_align`` -> correspondence (both 0-5).

    The group of each image is its prompt id, the ``_NNN`` suffix of ``name``; splits
    are grouped by prompt, as the field's public splits are.
    Images are looked up in ``root/images``, ``root`` and ``root/image``.
    """
    folder, csv_path = split_root(root, "data.csv")
    table = read_csv(csv_path)
    dirs = search_dirs(image_root, [folder / "images", folder, folder / "image"])
    scores = {"quality": "mos_quality", "correspondence": "mos_align"}
    make = row_maker(table, "name", "prompt", scores, dirs, verify_images, _agiqa3k_group)
    return build_dataset("agiqa3k", csv_path, table.rows, make, ("quality", "correspondence"), on_error,
                         dict.fromkeys(scores, MOS_0_5), split_by="prompt")


def load_aigiqa20k(
    root: PathLike,
    image_root: PathLike | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
) -> QualityDataset:
    """AIGIQA-20K: ``info_train.xlsx`` or ``info_train.csv`` (``name, prompt, mos``; MOS 0-5) -> quality.

    The CSV that circulates has no header row: its columns are then read by position,
    with a notice. A folder is searched for ``info_train.csv``, then ``info_train.xlsx``
    (``info_val`` has no MOS). Images are looked up in ``root``, ``root/images`` and ``root/train``.
    """
    folder, path = split_root(root, "info_train.csv")
    if Path(root).is_dir() and not path.exists() and (folder / "info_train.xlsx").exists():
        path = folder / "info_train.xlsx"
    table = read_xlsx(path) if path.suffix.lower() == ".xlsx" else read_csv(path, _aigiqa20k_columns(path))
    dirs = search_dirs(image_root, [folder, folder / "images", folder / "train"])
    make = row_maker(table, "name", "prompt", {"quality": "mos"}, dirs, verify_images)
    return build_dataset("aigiqa20k", path, table.rows, make, ("quality",), on_error, {"quality": MOS_0_5})


def _aigiqa20k_columns(path: Path) -> tuple[str, ...] | None:
    """``None`` when the CSV has a header row; the columns by position when it starts with data."""
    first = read_csv_head(path)
    if {"name", "mos"} <= {f.casefold() for f in first}:
        return None
    if len(first) != len(AIGIQA20K_COLUMNS) or not _is_number(first[-1]):
        raise ValueError(f"{path}: first row {first[:3]} is neither a header (name, prompt, mos) nor a data row "
                         "(image name, prompt, MOS); info_val files carry no MOS and cannot be trained on")
    warnings.warn(f"{path} has no header row: reading its columns by position as {', '.join(AIGIQA20K_COLUMNS)}",
                  stacklevel=3)
    return AIGIQA20K_COLUMNS


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
