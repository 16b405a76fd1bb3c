"""Published split files in IPCE's layout, so results compare with the papers that used them.

IPCE's code ships its splits (ten per data set; eleven for AGIQA-1K) as ``Database/<set>/<k>/train.csv`` and
``<k>/val.csv``: rows of the annotation file, with its header (none for
AIGIQA-20K, as its ``info_train.csv``). Its ``val.csv`` is the test part. Rows
are matched to samples by the image's key (``QualitySample.key``: the name in
the annotation file; ``<model>/<image_name>`` for AIGCIQA2023). A validation
part for model selection is carved from each training part, never from test.
"""
from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .base import QualityDataset
from .kinds import DATASET_KINDS, Layout
from .splits import BY_CHOICES, Split, carve_validation, load_splits

TRAIN_FILE, TEST_FILE = "train.csv", "val.csv"
KEY_COLUMNS = ("name", "image", "image_name", "file")


class _Layouts(Mapping):
    """The layouts of the registered data-set kinds that have one, by data-set name (read from ``DATASET_KINDS``)."""

    def __getitem__(self, name: str) -> Layout:
        layout = DATASET_KINDS[name].layout
        if layout is None:
            raise KeyError(name)
        return layout

    def __iter__(self) -> Iterator[str]:
        return (k for k, kind in DATASET_KINDS.items() if kind.layout is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


LAYOUTS = _Layouts()


def _layout(dataset: QualityDataset) -> Layout:
    if dataset.name in LAYOUTS:
        return LAYOUTS[dataset.name]
    outputs = {o: o for o in dataset.outputs}
    return Layout(("image", "prompt", *outputs), ("image",), outputs)


def save_split_folder(splits: Sequence[Split], dataset: QualityDataset, folder: str | Path) -> Path:
    """Write ``folder/<k>/train.csv`` (train and validation) and ``folder/<k>/val.csv`` (test), k = 1, 2, ..."""
    folder, layout = Path(folder), _layout(dataset)
    for k, split in enumerate(splits, start=1):
        if split.n != len(dataset):
            raise ValueError(f"split {k - 1} is for n={split.n} samples; the data set has {len(dataset)}")
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
        _write_rows(folder / str(k) / TRAIN_FILE, dataset, sorted(split.train + split.val), layout)
        _write_rows(folder / str(k) / TEST_FILE, dataset, split.test, layout)
    return folder


def _write_rows(path: Path, dataset: QualityDataset, indices: Sequence[int], layout: Layout) -> None:
    keys = dataset.keys()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if layout.header:
            writer.writerow(layout.columns)
        for i in indices:
            sample = dataset.samples[i]
            values = dict(zip(layout.key, keys[i].split("/", len(layout.key) - 1)))
            values[layout.prompt] = sample.prompt
            values.update({column: sample.scores[o] for o, column in layout.scores.items() if o in sample.scores})
            writer.writerow([values.get(c, "") for c in layout.columns])


def load_split_folder(folder: str | Path, dataset: QualityDataset, val_fraction: float = 0.1,
                      by: str | None = None, seed: int = 0) -> list[Split]:
    """Splits from ``folder/<k>/{train,val}.csv`` (or one split from ``folder/{train,val}.csv``).

    ``val.csv`` is the test part; a validation part of about ``val_fraction`` of
    the data is carved from ``train.csv``'s images, grouped ``by`` (default: the
    data set's ``split_by``) with seed ``(seed, k)``. An image a file lists on both
    sides (a duplicated annotation row) stays in test only; images in neither part
    are left out; both with a warning. Images the data set lacks raise ``ValueError``.
    """
    folder = Path(folder)
    by = by or dataset.split_by
    if by not in BY_CHOICES:
        raise ValueError(f"by={by!r}; expected one of {BY_CHOICES}")
    index = {key: i for i, key in enumerate(dataset.keys())}
    groups = dataset.groups() if by == "prompt" else [str(i) for i in range(len(dataset))]
    splits = []
    for k, part in enumerate(_split_dirs(folder)):
        train, test = (_indices(part / name, index) for name in (TRAIN_FILE, TEST_FILE))
        both = train & test
        unused = len(dataset) - len(train | test)
        notes = [f"{len(both)} image(s) listed in both parts kept in test only"] if both else []
        notes += [f"{unused} image(s) of the data set in neither part left out"] if unused else []
        if notes:
            warnings.warn(f"{part}: {'; '.join(notes)}", stacklevel=2)
        train, val = carve_validation(sorted(train - test), groups, val_fraction, seed, k)
        split = Split(train, val, sorted(test), len(dataset), by, seed, None, val_fraction, {"source": str(part)})
        if by == "prompt":
            try:
                split.check_groups(groups)
            except ValueError as exc:
                raise ValueError(f"{part}: {exc}: this split file is not grouped by prompt; use by='image' "
                                 "(--split-by image)") from None
        splits.append(split)
    return splits


def _split_dirs(folder: Path) -> list[Path]:
    if (folder / TRAIN_FILE).is_file() and (folder / TEST_FILE).is_file():
        return [folder]
    numbered = [d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()] if folder.is_dir() else []
    dirs = sorted((d for d in numbered if (d / TRAIN_FILE).is_file() and (d / TEST_FILE).is_file()),
                  key=lambda d: int(d.name))
    if not dirs:
        raise ValueError(f"{folder}: no split found; expected {TRAIN_FILE} and {TEST_FILE} in it or in numbered "
                         "subfolders (IPCE's Database/<set>/<k>/ layout)")
    return dirs


def _indices(path: Path, index: dict[str, int]) -> set[int]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: no rows; expected rows of the annotation file")
    width = min(len(row) for row in rows)
    header = [cell.strip().casefold() for cell in rows[0]]
    if {"model", "image_name"} <= set(header) and width > max(header.index("model"), header.index("image_name")):
        model, name = header.index("model"), header.index("image_name")
        keys = [f"{row[model].strip()}/{row[name].strip()}" for row in rows[1:]]
    elif rows[0][0].strip() in index:  # no header row: the key is the first column, as in info_train.csv
        keys = [row[0].strip() for row in rows]
    else:
        column = next((header.index(c) for c in KEY_COLUMNS if c in header), None)
        if column is None or column >= width:
            raise ValueError(f"{path}: first row {rows[0][:3]} names no image column {list(KEY_COLUMNS)} and is "
                             "not an image of the data set")
        keys = [row[column].strip() for row in rows[1:]]
    missing = [key for key in keys if key not in index]
    if missing:
        raise ValueError(f"{path}: {len(missing)} image(s) are not in the data set, e.g. {missing[:3]}; expected "
                         "a split file of this data set")
    return {index[key] for key in keys}


def load_split_source(path: str | Path, dataset: QualityDataset, val_fraction: float = 0.1,
                      by: str | None = None, seed: int = 0) -> list[Split]:
    """Splits from a JSON file of :func:`save_splits` or a folder in IPCE's layout (:func:`load_split_folder`)."""
    path = Path(path)
    if path.is_dir():
        return load_split_folder(path, dataset, val_fraction, by, seed)
    return load_splits(path, n=len(dataset), groups=dataset.groups())
