"""Printing results: tables, CSV and JSON, and summaries over splits."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FORMATS = ("table", "csv", "json")


def format_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows as an aligned table, CSV or JSON; numbers in a table get four decimals."""
    if fmt == "json":
        return json.dumps([dict(r) for r in rows], indent=1) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths)))]
    lines += ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
              for row in cells]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def emit(text: str, path: Path | None) -> None:
    """Write ``text`` to ``path`` (a file, never an existing folder), or to standard output."""
    if path is None:
        sys.stdout.write(text)
        return
    from mst_clipiqa.reward.utils import atomic_write  # the library (and torch) only once there is output

    check_output_file(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_output_file(path: Path | None, flag: str = "--output") -> None:
    """A file path that can be written: not an existing folder, and no file where a parent folder must be."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; expected a file path to write")
    _check_parents(path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is read-only; expected a file path that can be written")


def check_output_folder(path: Path | None, flag: str = "--out", what: str = "the results") -> None:
    """A folder that can be written (existing or not): not a file, below no file, in a writable place."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; expected a folder to write {what} into")
    _check_parents(path, flag)
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} is read-only; expected a folder that can be written")


def _check_parents(path: Path, flag: str) -> None:
    """No file where a parent folder must be, and the nearest existing parent folder writable."""
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"{flag} {path}: {blocking} is a file, so no folder can hold the output there")
    nearest = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and nearest is not None and not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {nearest} is read-only, so nothing can be written there")


def written_files(folder: Path, limit: int = 4) -> list[str]:
    """What a run wrote into ``folder``: each file, and each sub-folder's files (or their count past ``limit``);
    hidden files (the run lock) are left out."""
    lines = []
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if entry.is_dir():
            inside = sorted(p for p in entry.rglob("*") if p.is_file())
            lines += [str(p) for p in inside] if len(inside) <= limit else [f"{entry}/ ({len(inside)} files)"]
        else:
            lines.append(str(entry))
    return lines


def print_written(paths: Sequence[Path | str], data_on_stdout: bool = False) -> None:
    """End a command with the list of what it wrote (on standard error where standard output carries CSV or
    JSON data, so that it stays readable by a program)."""
    if paths:
        print("wrote:\n  " + "\n  ".join(str(p) for p in paths), file=sys.stderr if data_on_stdout else sys.stdout)


def summary_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> str:
    """Mean, median and spread per output and metric; the spread of a single split prints as ``-``."""
    lines = [title, f"{'output':<16}{'metric':<15}{'mean':>8}{'median':>8}{'std':>8}"]
    for output, metrics in summary.items():
        for metric, stats in metrics.items():
            values = [stats.get(k) for k in ("mean", "median", "std")]
            lines.append(f"{output:<16}{metric:<15}" + "".join(_stat(v) for v in values))
    return "\n".join(lines)


def _stat(value: float | None) -> str:
    return f"{'-':>8}" if value is None or not math.isfinite(value) else f"{value:>8.4f}"


def comparison_table(columns: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]], title: str) -> str:
    """Several summaries side by side (e.g. trained heads, linear probe, untrained): mean (std) per output
    and metric; a missing spread prints as ``-``."""
    names = list(columns)
    first = columns[names[0]]
    lines = [title, f"{'output':<16}{'metric':<15}" + "".join(f"{n:>20}" for n in names)]
    for output, metrics in first.items():
        for metric in metrics:
            cells = [_mean_std(columns[n].get(output, {}).get(metric, {})) for n in names]
            lines.append(f"{output:<16}{metric:<15}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def _mean_std(stats: Mapping[str, float]) -> str:
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{mean:.4f} ({'-' if std is None or not math.isfinite(std) else f'{std:.4f}'})"
