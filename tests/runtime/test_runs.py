"""The run-folder lock: one holder at a time, with the operating system's lock or, where it has none, filelock's
soft lock (a file created exclusively, named in the error); `import integrations` works without fcntl."""

import subprocess
import sys
from pathlib import Path

import pytest
from filelock import SoftFileLock

from mst_clipiqa.runtime import runs
from mst_clipiqa.runtime.runs import RunLock

ROOT = Path(__file__).resolve().parents[2]


def _one_holder_at_a_time(directory: Path) -> None:
    held = RunLock(directory).acquire()
    with pytest.raises(ValueError, match=rf"{directory} is in use by another run") as caught:
        RunLock(directory).acquire()
    held.release()
    RunLock(directory).acquire().release()
    assert "\n" not in str(caught.value)


def test_the_os_lock_admits_one_holder(tmp_path):
    _one_holder_at_a_time(tmp_path / "run")


def test_without_an_os_lock_the_soft_lock_admits_one_holder_and_names_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "FileLock", SoftFileLock)  # what filelock's FileLock is where fcntl is missing
    _one_holder_at_a_time(tmp_path / "run")
    (tmp_path / "run" / ".lock").touch()  # what a killed holder leaves behind
    with pytest.raises(ValueError, match=r"if no run is live there, remove .*run/\.lock\)$"):
        RunLock(tmp_path / "run").acquire()


def test_integrations_import_where_fcntl_is_missing_and_lock_with_the_soft_lock(tmp_path):
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import integrations\nfrom mst_clipiqa.runtime import runs\n"
            f"runs.RunLock({str(tmp_path)!r}).acquire()\nprint(runs.FileLock.__name__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SoftFileLock"]
