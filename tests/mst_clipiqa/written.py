"""The ``wrote:`` list a command that writes files ends with (``mst_clipiqa.cli.output.print_written``)."""
from __future__ import annotations

import re
from pathlib import Path

FOLDER = re.compile(r"^(?P<folder>.+)/ \((?P<count>\d+) files\)$")


def written_list(text: str, folder: Path | None = None) -> list[Path]:
    """The files ``text`` ends by listing, each checked to exist; with ``folder``, every file a run put there (but
    hidden ones, such as its lock) must be listed, by name or by a ``FOLDER/ (N files)`` entry."""
    _, found, tail = text.rpartition("wrote:\n")
    assert found, f"no 'wrote:' list in {text[-500:]!r}"
    lines = tail.rstrip("\n").split("\n")
    assert all(line.startswith("  ") for line in lines), f"the 'wrote:' list is not the end: {tail[-500:]!r}"
    files = []
    for entry in (line.strip() for line in lines):
        if match := FOLDER.match(entry):
            inside = [p for p in Path(match["folder"]).rglob("*") if p.is_file()]
            assert len(inside) == int(match["count"]), entry
            files += inside
        else:
            assert Path(entry).is_file(), f"listed but not a file: {entry}"
            files.append(Path(entry))
    if folder is not None:
        made = {p for p in folder.rglob("*") if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")}
        assert not made - set(files), f"written but not listed: {sorted(map(str, made - set(files)))[:5]}"
    return files
