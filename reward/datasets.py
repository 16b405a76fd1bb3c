"""Image-quality datasets: a common record type and loaders for the AIGIQA benchmarks.

Every loader returns a :class:`QualityDataset` whose samples carry scores under
the model's output names (``quality``, ``correspondence``, ``authenticity``).
Scores are kept exactly as published (no rescaling): AGIQA-1K/3K and AIGIQA-20K
MOS lie roughly in 0..5, AIGCIQA2023 ``MOSz`` values are z-score based and on
a different scale.

Bad annotation data raises ``ValueError`` naming the file, the place in it
(``line N`` for CSV files, counting the header as line 1; ``row N`` for
spreadsheets, the row number shown by a spreadsheet program, header included)
and what was expected. With ``on_error="skip"`` bad rows are dropped instead,
listed in ``dataset.skipped`` and summarised in one warning. Problems with the
file as a whole (missing file, missing columns, no rows) always raise.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

SCORE_NAMES = ("quality", "correspondence", "authenticity")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ON_ERROR_CHOICES = ("raise", "skip")

PathLike = str | Path


@dataclass(frozen=True)
class QualitySample:
    """One annotated image: its file, its generation prompt and its scores.

    ``group`` identifies images that must stay on the same side of a
    prompt-grouped split; ``None`` means "group by prompt text".
    """

    image: Path
    prompt: str
    scores: dict[str, float]
    group: str | None = None


class QualityDataset(torch.utils.data.Dataset):
    """A list of :class:`QualitySample` exposed as a torch dataset.

    Items are dicts ``{"image": (3, H, W) float tensor in [0, 1], "prompt": str,
    "scores": {name: 0-d float tensor}, "index": int}``. Images keep their
    size; batch them with :func:`collate` (also ``QualityDataset.collate``).
    ``skipped`` lists the annotation rows dropped while loading.
    """

    def __init__(
        self,
        samples: Sequence[QualitySample],
        name: str,
        outputs: Sequence[str],
        skipped: Sequence[str] = (),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.name = name
        self.outputs = tuple(outputs)
        self.skipped = list(skipped)
        self.transform = transform
        if not self.outputs:
            raise ValueError(f"dataset {name!r}: outputs must name at least one score")
        for i, sample in enumerate(self.samples):
            missing = [o for o in self.outputs if o not in sample.scores]
            if missing:
                raise ValueError(
                    f"dataset {name!r}: sample {i} ({sample.image}) lacks score(s) {missing}; "
                    f"expected {list(self.outputs)}, found {sorted(sample.scores)}"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"QualityDataset(name={self.name!r}, n={len(self)}, outputs={self.outputs})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = load_image(sample.image, where=f"dataset {self.name!r} sample {index}")
        if self.transform is not None:
            image = self.transform(image)
        scores = {o: torch.tensor(sample.scores[o], dtype=torch.float32) for o in self.outputs}
        return {"image": image, "prompt": sample.prompt, "scores": scores, "index": int(index)}

    @staticmethod
    def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Alias of the module-level :func:`collate`."""
        return collate(batch)

    def subset(self, indices: Iterable[int]) -> QualityDataset:
        """A new dataset holding the samples at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise IndexError(
                f"dataset {self.name!r}: subset indices out of range 0..{len(self) - 1}: {bad[:10]}"
            )
        return QualityDataset(
            [self.samples[i] for i in idx], self.name, self.outputs, transform=self.transform
        )

    def score_array(self, name: str) -> np.ndarray:
        """The scores named ``name`` of all samples as a float64 array."""
        if name not in self.outputs:
            raise ValueError(
                f"dataset {self.name!r} has no score {name!r}; it has {list(self.outputs)}"
            )
        return np.array([s.scores[name] for s in self.samples], dtype=np.float64)

    def groups(self) -> list[str]:
        """Group id per sample (the sample's ``group``, else its prompt text)."""
        return [s.group if s.group is not None else s.prompt for s in self.samples]


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dataset items whose images differ in size.

    Returns ``{"images": list of (3, H, W) tensors, "prompts": list[str],
    "scores": {name: (B,) float tensor}, "indices": (B,) long tensor}``.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    names = list(batch[0]["scores"])
    return {
        "images": [item["image"] for item in batch],
        "prompts": [item["prompt"] for item in batch],
        "scores": {n: torch.stack([item["scores"][n] for item in batch]) for n in names},
        "indices": torch.tensor([item["index"] for item in batch], dtype=torch.long),
    }


def load_image(path: Path, where: str = "") -> torch.Tensor:
    """Read an image file as an RGB float tensor (3, H, W) in [0, 1]."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}cannot read image {path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


# --------------------------------------------------------------------------- tables


@dataclass
class _Table:
    path: Path
    columns: list[str]
    rows: list[tuple[str, dict[str, Any]]]  # (location such as "line 5", {column: value})


class _RowError(ValueError):
    """A problem confined to one annotation row (skippable)."""


def _read_csv(path: Path) -> _Table:
    _require_file(path)
    try:
        return _parse_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot parse as UTF-8 CSV: {exc}") from exc


def _parse_csv(path: Path) -> _Table:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
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


def _read_xlsx_cells(path: Path) -> list[tuple[int, list[Any]]]:
    """Non-empty rows of the first sheet as (1-based sheet row number, cell values)."""
    import openpyxl

    _require_file(path)
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


def _read_xlsx(path: Path) -> _Table:
    cells = _read_xlsx_cells(path)
    if not cells:
        raise ValueError(f"{path}: first sheet is empty; expected a header row")
    _, header = cells[0]
    columns = ["" if h is None else str(h).strip() for h in header]
    rows = [(f"row {n}", dict(zip(columns, values))) for n, values in cells[1:]]
    return _Table(path, columns, rows)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"annotation file not found: {path}")


def _column_map(table: _Table, wanted: Sequence[str]) -> dict[str, str]:
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


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _parse_score(value: Any, field: str, where: str) -> float:
    """``field`` describes the source, e.g. "column 'MOS'"."""
    try:
        score = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        score = None
    if score is None or not math.isfinite(score):
        text = _cell_text(value)
        shown = "empty" if text == "" else repr(value) if isinstance(value, str) else text
        raise _RowError(f"{where}: {field} is {shown}; expected a finite number")
    return score


def _parse_prompt(value: Any, column: str, where: str) -> str:
    text = value if isinstance(value, str) else _cell_text(value)
    if not text.strip():
        raise _RowError(f"{where}: column {column!r} is empty; expected the prompt text")
    return text


def _resolve_image(name: str, dirs: Sequence[Path], where: str, verify: bool) -> Path:
    """Find ``name`` in the first of ``dirs`` that holds it; check it opens as an image."""
    if not name:
        raise _RowError(f"{where}: image name is empty; expected a file name")
    suffixes = ("",) if Path(name).suffix else IMAGE_EXTENSIONS
    for directory in dirs:
        hits = [directory / (name + s) for s in suffixes if (directory / (name + s)).is_file()]
        if len(hits) > 1:
            raise _RowError(
                f"{where}: image {name!r} has no extension and matches several files: "
                f"{[str(h) for h in hits]}; expected exactly one"
            )
        if hits:
            if verify:
                _verify_image(hits[0], where)
            return hits[0]
    tried = ", ".join(str(d) for d in dirs)
    ext_note = f" (also tried extensions {list(IMAGE_EXTENSIONS)})" if suffixes != ("",) else ""
    raise _RowError(f"{where}: image {name!r} not found; looked in {tried}{ext_note}")


def _verify_image(path: Path, where: str) -> None:
    try:
        with Image.open(path) as im:  # parses the header only
            im.size
    except Exception as exc:
        raise _RowError(f"{where}: image {path} cannot be read as an image: {exc}") from None


# --------------------------------------------------------------------------- building


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


def _build(
    name: str,
    source: Path,
    rows: Sequence[tuple[str, Any]],
    make: Callable[[str, Any], QualitySample],
    outputs: Sequence[str],
    on_error: str,
) -> QualityDataset:
    """Turn annotation rows into a dataset, applying the ``on_error`` policy."""
    _check_on_error(on_error)
    if not rows:
        raise ValueError(f"{source}: no data rows; expected at least one annotated image")
    samples: list[QualitySample] = []
    skipped: list[str] = []
    for where, row in rows:
        try:
            samples.append(make(where, row))
        except _RowError as exc:
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
    _warn_duplicates(name, samples)
    return QualityDataset(samples, name, outputs, skipped=skipped)


def _warn_duplicates(name: str, samples: Sequence[QualitySample]) -> None:
    counts = Counter(s.image for s in samples)
    repeated = [str(p) for p, c in counts.items() if c > 1]
    if repeated:
        warnings.warn(
            f"{name}: {len(repeated)} image file(s) are annotated more than once "
            f"(a split by image could put copies on both sides); e.g. {repeated[:3]}",
            stacklevel=3,
        )


def _row_maker(
    table: _Table,
    image_col: str,
    prompt_col: str | None,
    score_cols: Mapping[str, str],
    image_dirs: Sequence[Path],
    verify_images: bool,
    group_of: Callable[[str, dict[str, Any], str], str | None] | None = None,
) -> Callable[[str, dict[str, Any]], QualitySample]:
    wanted = [image_col, *([prompt_col] if prompt_col else []), *score_cols.values()]
    cols = _column_map(table, wanted)

    def make(where: str, row: dict[str, Any]) -> QualitySample:
        at = f"{table.path}, {where}"
        if "__field_count__" in row:
            raise _RowError(
                f"{at}: found {row['__field_count__']} fields; expected {len(table.columns)} "
                "(as many as header columns)"
            )
        image_name = _cell_text(row[cols[image_col]])
        scores = {out: _parse_score(row[cols[c]], f"column {c!r}", at) for out, c in score_cols.items()}
        prompt = _parse_prompt(row[cols[prompt_col]], prompt_col, at) if prompt_col else ""
        group = group_of(image_name, row, at) if group_of else None
        image = _resolve_image(image_name, image_dirs, at, verify_images)
        return QualitySample(image=image, prompt=prompt, scores=scores, group=group)

    return make


def _split_root(root: PathLike, default_file: str) -> tuple[Path, Path]:
    """Accept either the dataset folder or its annotation file; return (folder, file)."""
    root = Path(root)
    if root.is_file():
        return root.parent, root
    if not root.exists():
        raise ValueError(f"dataset path not found: {root}")
    return root, root / default_file


def _dirs(image_root: PathLike | None, defaults: Sequence[Path]) -> list[Path]:
    return [Path(image_root)] if image_root is not None else list(defaults)


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
) -> QualityDataset:
    """Load a generic annotation CSV.

    ``score_cols`` maps output names (of ``SCORE_NAMES``) to CSV columns;
    default ``{"quality": "mos"}``. Image paths are relative to ``image_root``
    (default: the CSV's folder). ``prompt_col=None`` gives empty prompts;
    ``group_col`` sets the split group (default: prompt text).
    """
    path = Path(path)
    score_cols = dict(score_cols or {"quality": "mos"})
    unknown = [k for k in score_cols if k not in SCORE_NAMES]
    if unknown:
        raise ValueError(f"score_cols keys {unknown} are not outputs; expected some of {SCORE_NAMES}")
    table = _read_csv(path)
    group_of = None
    if group_col is not None:
        gcol = _column_map(table, [group_col])[group_col]

        def group_of(_image: str, row: dict[str, Any], _at: str) -> str | None:
            return _cell_text(row[gcol]) or None
    make = _row_maker(
        table, image_col, prompt_col, score_cols,
        _dirs(image_root, [path.parent]), verify_images, group_of,
    )
    return _build(name or path.stem, path, table.rows, make, tuple(score_cols), on_error)


def load_agiqa1k(
    root: PathLike,
    image_root: PathLike | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
) -> QualityDataset:
    """AGIQA-1K: ``AIGC_MOS_Zscore.xlsx`` (columns ``Image, Prompt, MOS``) -> quality.

    Images are looked up in ``root``, ``root/images`` and ``root/file`` (the
    release's ``file.zip``), in that order, unless ``image_root`` is given.
    """
    folder, sheet = _split_root(root, "AIGC_MOS_Zscore.xlsx")
    table = _read_xlsx(sheet)
    dirs = _dirs(image_root, [folder, folder / "images", folder / "file"])
    make = _row_maker(table, "Image", "Prompt", {"quality": "MOS"}, dirs, verify_images)
    return _build("agiqa1k", sheet, table.rows, make, ("quality",), on_error)


_AGIQA3K_PROMPT_ID = re.compile(r"_(\d+)$")


def _agiqa3k_group(image_name: str, _row: dict[str, Any], at: str) -> str:
    match = _AGIQA3K_PROMPT_ID.search(Path(image_name).stem)
    if match is None:
        raise _RowError(
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
    """AGIQA-3K: ``data.csv``; ``mos_quality`` -> quality, ``mos_align`` -> correspondence.

    The group of each image is its prompt id, the ``_NNN`` suffix of ``name``.
    Images are looked up in ``root/images``, ``root`` and ``root/image``.
    """
    folder, csv_path = _split_root(root, "data.csv")
    table = _read_csv(csv_path)
    dirs = _dirs(image_root, [folder / "images", folder, folder / "image"])
    scores = {"quality": "mos_quality", "correspondence": "mos_align"}
    make = _row_maker(table, "name", "prompt", scores, dirs, verify_images, _agiqa3k_group)
    return _build("agiqa3k", csv_path, table.rows, make, ("quality", "correspondence"), on_error)


def load_aigiqa20k(
    root: PathLike,
    image_root: PathLike | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
) -> QualityDataset:
    """AIGIQA-20K: ``info_train.csv`` (``name,prompt,mos``) -> quality.

    Images are looked up in ``root``, ``root/images`` and ``root/train``.
    """
    folder, csv_path = _split_root(root, "info_train.csv")
    table = _read_csv(csv_path)
    dirs = _dirs(image_root, [folder, folder / "images", folder / "train"])
    make = _row_maker(table, "name", "prompt", {"quality": "mos"}, dirs, verify_images)
    return _build("aigiqa20k", csv_path, table.rows, make, ("quality",), on_error)


AIGCIQA2023_OUTPUTS = {"quality": "mosz1", "authenticity": "mosz2", "correspondence": "mosz3"}
AIGCIQA2023_CSV_COLUMNS = ("model", "image_name", "mosz1", "mosz2", "mosz3", "prompt")


def load_aigciqa2023(
    root: PathLike,
    image_root: PathLike | None = None,
    on_error: str = "raise",
    verify_images: bool = True,
    images_per_prompt: int = 4,
) -> QualityDataset:
    """AIGCIQA2023: mosz1 -> quality, mosz2 -> authenticity, mosz3 -> correspondence.

    Two layouts are read.

    (a) The release: ``root/DATA/MOS/mosz{1,2,3}.mat`` (variable ``MOSz``, one
    value per image), ``pic-index.xlsx`` and ``AIGCIQA2023_Prompts.xlsx`` (each
    in ``root`` or ``root/DATA``). Assumptions, checked where possible:

    - ``pic-index.xlsx``, first sheet: one row per image in ``MOSz`` order;
      column A the generator name, column B the image file name inside that
      generator's folder. No header row (a first row whose A cell is
      "model"/"generator" or whose B cell is "image"/"image_name"/"name" is
      taken as a header and skipped).
    - ``AIGCIQA2023_Prompts.xlsx``, first sheet: one row per prompt, in prompt
      order; the prompt text is in column C (scene and challenge in A and B).
      If the first row has a cell reading "prompt", it is a header and that
      cell's column holds the prompts.
    - Image ``i`` (0-based row of pic-index) belongs to prompt
      ``(i % (images_per_prompt * n_prompts)) // images_per_prompt``: each
      generator has a block of ``n_prompts x images_per_prompt`` consecutive
      rows (100 x 4 = 400), prompts in order, four images each. The generator
      name must be constant within each block, else loading fails.
    - The image file is ``Image/<generator>/<name>``, else ``Image/allimg/<i>.png``
      (0-based ``i``), under ``root`` or ``image_root``.

    (b) The flattened CSV with columns ``model,image_name,mosz1,mosz2,mosz3,prompt``:
    pass the file, or a folder holding exactly one CSV with those columns.
    Images are looked up as ``<model>/<image_name>`` under ``Image``,
    the CSV's folder itself and ``images``, then as ``<image_name>`` in
    ``Image/allimg``, ``images`` and the folder itself.

    Groups are the prompt text (all images of one prompt, across generators).
    """
    root = Path(root)
    if root.is_dir() and (root / "DATA" / "MOS").is_dir():
        return _load_aigciqa2023_mat(root, image_root, on_error, verify_images, images_per_prompt)
    return _load_aigciqa2023_csv(_find_aigciqa2023_csv(root), image_root, on_error, verify_images)


def _find_aigciqa2023_csv(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise ValueError(f"dataset path not found: {root}")
    wanted = {c.casefold() for c in AIGCIQA2023_CSV_COLUMNS}
    matches = []
    for candidate in sorted(root.glob("*.csv")):
        with candidate.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f), [])
        if wanted <= {h.strip().casefold() for h in header}:
            matches.append(candidate)
    if len(matches) != 1:
        found = "none" if not matches else ", ".join(str(m) for m in matches)
        raise ValueError(
            f"{root}: expected either DATA/MOS/mosz1.mat..mosz3.mat or exactly one CSV with "
            f"columns {list(AIGCIQA2023_CSV_COLUMNS)}; CSVs with those columns: {found}"
        )
    return matches[0]


def _load_aigciqa2023_csv(
    path: Path, image_root: PathLike | None, on_error: str, verify_images: bool
) -> QualityDataset:
    table = _read_csv(path)
    cols = _column_map(table, AIGCIQA2023_CSV_COLUMNS)
    base = Path(image_root) if image_root is not None else path.parent

    def make(where: str, row: dict[str, Any]) -> QualitySample:
        at = f"{path}, {where}"
        if "__field_count__" in row:
            raise _RowError(
                f"{at}: found {row['__field_count__']} fields; expected {len(table.columns)}"
            )
        scores = {o: _parse_score(row[cols[c]], f"column {c!r}", at)
                  for o, c in AIGCIQA2023_OUTPUTS.items()}
        prompt = _parse_prompt(row[cols["prompt"]], "prompt", at)
        model = _cell_text(row[cols["model"]])
        if not model:
            raise _RowError(f"{at}: column 'model' is empty; expected the generator name")
        name = _cell_text(row[cols["image_name"]])
        dirs = [base / "Image" / model, base / model, base / "images" / model,
                base / "Image" / "allimg", base / "images", base]
        image = _resolve_image(name, dirs, at, verify_images)
        return QualitySample(image=image, prompt=prompt, scores=scores)

    return _build("aigciqa2023", path, table.rows, make, tuple(AIGCIQA2023_OUTPUTS), on_error)


def _find_in(root: Path, filename: str) -> Path:
    for candidate in (root / filename, root / "DATA" / filename):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{root}: {filename} not found; looked in {root} and {root / 'DATA'}")


def _read_mosz(path: Path, expected: int, index_file: Path) -> np.ndarray:
    import scipy.io

    _require_file(path)
    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file: {exc}") from exc
    if "MOSz" not in content:
        found = [k for k in content if not k.startswith("__")]
        raise ValueError(f"{path}: variable 'MOSz' not found; found variables {found}")
    try:
        values = np.asarray(content["MOSz"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: 'MOSz' is not numeric: {exc}") from exc
    if values.size != expected:
        raise ValueError(
            f"{path}: 'MOSz' holds {values.size} values; expected {expected}, one per row "
            f"of {index_file}"
        )
    return values


_PIC_INDEX_HEADER_A = {"model", "generator"}
_PIC_INDEX_HEADER_B = {"image", "image_name", "name"}


def _read_pic_index(path: Path) -> list[tuple[int, str, str]]:
    """(sheet row, generator, image name) per image."""
    cells = _read_xlsx_cells(path)
    if cells:
        first = [_cell_text(v).casefold() for v in cells[0][1][:2]] + ["", ""]
        if first[0] in _PIC_INDEX_HEADER_A or first[1] in _PIC_INDEX_HEADER_B:
            cells = cells[1:]
    if not cells:
        raise ValueError(f"{path}: no rows; expected one row per image (generator, image name)")
    rows = []
    for number, values in cells:
        values = values + [None, None]
        model, name = _cell_text(values[0]), _cell_text(values[1])
        if not model:
            raise ValueError(
                f"{path}, row {number}: column A is empty; expected the generator name"
            )
        rows.append((number, model, name))
    return rows


def _read_prompt_list(path: Path) -> list[str]:
    cells = _read_xlsx_cells(path)
    column = 2
    if cells:
        header = [_cell_text(v).casefold() for v in cells[0][1]]
        if "prompt" in header:
            column = header.index("prompt")
            cells = cells[1:]
    if not cells:
        raise ValueError(f"{path}: no rows; expected one row per prompt")
    prompts = []
    for number, values in cells:
        text = _cell_text(values[column]) if column < len(values) else ""
        if not text:
            raise ValueError(
                f"{path}, row {number}: column {chr(ord('A') + column)} is empty; "
                "expected the prompt text"
            )
        prompts.append(text)
    return prompts


def _check_generator_blocks(index_file: Path, rows: Sequence[tuple[int, str, str]], block: int) -> None:
    if len(rows) % block:
        raise ValueError(
            f"{index_file}: {len(rows)} image rows is not a multiple of {block} "
            "(prompts x images per prompt); the assumed layout is one block of "
            "consecutive rows per generator"
        )
    for start in range(0, len(rows), block):
        first_row, generator, _ = rows[start]
        for number, model, _ in rows[start:start + block]:
            if model != generator:
                raise ValueError(
                    f"{index_file}, row {number}: generator {model!r} differs from {generator!r} "
                    f"(row {first_row}); expected {block} consecutive rows per generator "
                    "(prompts x images per prompt), the layout the prompt mapping relies on"
                )


def _load_aigciqa2023_mat(
    root: Path,
    image_root: PathLike | None,
    on_error: str,
    verify_images: bool,
    images_per_prompt: int,
) -> QualityDataset:
    index_file = _find_in(root, "pic-index.xlsx")
    prompts_file = _find_in(root, "AIGCIQA2023_Prompts.xlsx")
    rows = _read_pic_index(index_file)
    prompts = _read_prompt_list(prompts_file)
    block = images_per_prompt * len(prompts)
    _check_generator_blocks(index_file, rows, block)
    mos_dir = root / "DATA" / "MOS"
    mos = {
        out: _read_mosz(mos_dir / f"{var}.mat", len(rows), index_file)
        for out, var in AIGCIQA2023_OUTPUTS.items()
    }
    base = Path(image_root) if image_root is not None else root

    def make(where: str, item: tuple[int, int, str, str]) -> QualitySample:
        i, number, model, name = item
        at = f"{index_file}, {where} (image index {i})"
        scores = {}
        for out, var in AIGCIQA2023_OUTPUTS.items():
            scores[out] = _parse_score(mos[out][i], f"{var}.mat MOSz entry {i + 1}", at)
        prompt = prompts[(i % block) // images_per_prompt]
        candidates = [base / "Image" / model / name] if name else []
        candidates.append(base / "Image" / "allimg" / f"{i}.png")
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise _RowError(f"{at}: image not found; looked for {', '.join(map(str, candidates))}")
        if verify_images:
            _verify_image(image, at)
        return QualitySample(image=image, prompt=prompt, scores=scores)

    items = [(f"row {number}", (i, number, model, name)) for i, (number, model, name) in enumerate(rows)]
    return _build("aigciqa2023", index_file, items, make, tuple(AIGCIQA2023_OUTPUTS), on_error)


LOADERS: dict[str, Callable[..., QualityDataset]] = {
    "agiqa1k": load_agiqa1k,
    "agiqa3k": load_agiqa3k,
    "aigciqa2023": load_aigciqa2023,
    "aigiqa20k": load_aigiqa20k,
    "csv": load_csv,
}


def load_dataset(kind: str, path: PathLike, **kwargs: Any) -> QualityDataset:
    """Load a dataset by kind: one of ``agiqa1k, agiqa3k, aigciqa2023, aigiqa20k, csv``."""
    key = kind.strip().lower().replace("-", "").replace("_", "")
    if key not in LOADERS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(LOADERS)}")
    return LOADERS[key](path, **kwargs)
