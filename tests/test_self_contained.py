"""A fresh clone runs on its own: no tracked file reads data from outside the repository."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "shared"  # the folder beside a checkout that only CI and the maintainers' machines have
# a path into it: up one level then the folder, the folder between slashes, or the folder as a quoted path part
OUTSIDE = re.compile(rf"""\.\./{FOLDER}\b|/{FOLDER}/|/\s*["']{FOLDER}["']|["']{FOLDER}["']\s*/""")
CODE = (".py", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".sh", ".txt")


def tracked_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True,
                               timeout=60).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / n for n in names if (n.endswith(CODE) or "/" not in n or n.startswith(".ci/"))]


def test_no_tracked_file_reads_a_shared_folder_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        offenders += [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
                      if OUTSIDE.search(line)]
    assert offenders == [], "reads data outside the repository:\n" + "\n".join(offenders)


def test_the_pattern_catches_the_ways_such_a_path_is_written():
    for line in (f'ROOT.parent / "{FOLDER}" / "data"', f"Path('../{FOLDER}/data')", f"/work/{FOLDER}/data/x.csv"):
        assert OUTSIDE.search(line), line
    for line in ("the shared denoising loop", "def shared(name):", "shared_state = {}"):
        assert not OUTSIDE.search(line), line


def test_the_sample_data_ships_with_the_repository_and_names_its_licence():
    assert SAMPLE.is_relative_to(ROOT)
    rows = (SAMPLE / "data.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"
    images = sorted(p.name for p in (SAMPLE / "images").iterdir())
    assert 24 <= len(images) <= 48 and len(rows) == len(images) + 1
    assert sum(p.stat().st_size for p in (SAMPLE / "images").iterdir()) < 4_000_000
    note = (SAMPLE / "README.md").read_text(encoding="utf-8")
    assert "AGIQA-3K" in note and "MIT" in note and (SAMPLE / "LICENSE").is_file()
