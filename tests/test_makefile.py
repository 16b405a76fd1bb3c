"""``make demo`` installs the library alone, showing pip's progress; ``make test`` and ``make docs`` add their extras.
Read from ``make -n``, which prints the commands a target would run without running them."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def installs(target: str, venv: Path) -> list[list[str]]:
    """What each ``pip install`` of ``make TARGET`` in a fresh ``venv`` installs, its options removed."""
    done = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line) for line in done.stdout.splitlines() if " pip install " in line]
    for words in lines:
        assert words[words.index("--progress-bar") + 1] == "on", words
        assert not {"-q", "--quiet"} & set(words), words
    return [[w for w in words[words.index("install") + 1:] if w not in ("--progress-bar", "on", "-e")]
            for words in lines]


def test_make_demo_installs_the_library_alone_and_shows_progress(tmp_path):
    assert installs("demo", tmp_path / "venv") == [["torch==2.14.1", "torchvision==0.29.1"], ["."]]


def test_the_extras_come_with_make_test_and_make_docs(tmp_path):
    base = installs("demo", tmp_path / "venv")
    test, docs = installs("test", tmp_path / "venv"), installs("docs", tmp_path / "venv")
    assert test[:2] == docs[:2] == base
    assert test[2][0].startswith(".[test,peers") and ".[docs]" in [words[0] for words in test[2:]]
    assert docs[2:] == [[".[docs]"]]
