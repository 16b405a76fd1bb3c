"""AIGCIQA2023: the MOSz .mat files with their index and prompt spreadsheets, or the flattened CSV."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import PathLike, QualityDataset, QualitySample
from .tables import (
    RowError,
    build_dataset,
    cell_text,
    column_map,
    parse_prompt,
    parse_score,
    read_csv,
    read_xlsx_cells,
    require_file,
    resolve_image,
    verify_image,
)

AIGCIQA2023_OUTPUTS = {"quality": "mosz1", "authenticity": "mosz2", "correspondence": "mosz3"}
AIGCIQA2023_CSV_COLUMNS = ("model", "image_name", "mosz1", "mosz2", "mosz3", "prompt")
# Public loaders divide MOSz by 20 (to 0-5) or by 100: its units are 0-100; the flattened CSV holds MOSz / 20.
MAT_RANGE, CSV_RANGE = (0.0, 100.0), (0.0, 5.0)


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
    ``Image/allimg``, ``images`` and the folder itself. Its prompts come wrapped
    in literal quote marks (the field ``'"a corgi"'`` once read); they are removed.

    Label units: ``MOSz`` is on 0-100 (public loaders divide it by 20 or 100);
    the flattened CSV holds ``MOSz / 20``, on 0-5. Each image's key (what split
    files list) is ``<model>/<image_name>``. Groups are the prompt text (all
    images of one prompt, across generators); the field splits by image.
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
    table = read_csv(path)
    cols = column_map(table, AIGCIQA2023_CSV_COLUMNS)
    base = Path(image_root) if image_root is not None else path.parent

    def make(where: str, row: dict[str, Any]) -> QualitySample:
        at = f"{path}, {where}"
        if "__field_count__" in row:
            raise RowError(
                f"{at}: found {row['__field_count__']} fields; expected {len(table.columns)}"
            )
        scores = {o: parse_score(row[cols[c]], f"column {c!r}", at)
                  for o, c in AIGCIQA2023_OUTPUTS.items()}
        prompt = parse_prompt(_unquote(row[cols["prompt"]]), "prompt", at)
        model = cell_text(row[cols["model"]])
        if not model:
            raise RowError(f"{at}: column 'model' is empty; expected the generator name")
        name = cell_text(row[cols["image_name"]])
        dirs = [base / "Image" / model, base / model, base / "images" / model,
                base / "Image" / "allimg", base / "images", base]
        image = resolve_image(name, dirs, at, verify_images)
        return QualitySample(image=image, prompt=prompt, scores=scores, key=f"{model}/{name}")

    return build_dataset("aigciqa2023", path, table.rows, make, tuple(AIGCIQA2023_OUTPUTS), on_error,
                         dict.fromkeys(AIGCIQA2023_OUTPUTS, CSV_RANGE))


def _unquote(text: str) -> str:
    """``'"a corgi"'`` -> ``'a corgi'``: the flattened CSV's literal quote marks around every prompt."""
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _find_in(root: Path, filename: str) -> Path:
    for candidate in (root / filename, root / "DATA" / filename):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{root}: {filename} not found; looked in {root} and {root / 'DATA'}")


def _read_mosz(path: Path, expected: int, index_file: Path) -> np.ndarray:
    import scipy.io

    require_file(path)
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
    cells = read_xlsx_cells(path)
    if cells:
        first = [cell_text(v).casefold() for v in cells[0][1][:2]] + ["", ""]
        if first[0] in _PIC_INDEX_HEADER_A or first[1] in _PIC_INDEX_HEADER_B:
            cells = cells[1:]
    if not cells:
        raise ValueError(f"{path}: no rows; expected one row per image (generator, image name)")
    rows = []
    for number, values in cells:
        values = values + [None, None]
        model, name = cell_text(values[0]), cell_text(values[1])
        if not model:
            raise ValueError(
                f"{path}, row {number}: column A is empty; expected the generator name"
            )
        rows.append((number, model, name))
    return rows


def _read_prompt_list(path: Path) -> list[str]:
    cells = read_xlsx_cells(path)
    column = 2
    if cells:
        header = [cell_text(v).casefold() for v in cells[0][1]]
        if "prompt" in header:
            column = header.index("prompt")
            cells = cells[1:]
    if not cells:
        raise ValueError(f"{path}: no rows; expected one row per prompt")
    prompts = []
    for number, values in cells:
        text = cell_text(values[column]) if column < len(values) else ""
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
            scores[out] = parse_score(mos[out][i], f"{var}.mat MOSz entry {i + 1}", at)
        prompt = prompts[(i % block) // images_per_prompt]
        candidates = [base / "Image" / model / name] if name else []
        candidates.append(base / "Image" / "allimg" / f"{i}.png")
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise RowError(f"{at}: image not found; looked for {', '.join(map(str, candidates))}")
        if verify_images:
            verify_image(image, at)
        return QualitySample(image=image, prompt=prompt, scores=scores, key=f"{model}/{name}")

    items = [(f"row {number}", (i, number, model, name)) for i, (number, model, name) in enumerate(rows)]
    return build_dataset("aigciqa2023", index_file, items, make, tuple(AIGCIQA2023_OUTPUTS), on_error,
                         dict.fromkeys(AIGCIQA2023_OUTPUTS, MAT_RANGE))


