"""The floor constraints that ``make test-min`` installs are the floors pyproject.toml declares."""
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = runpy.run_path(str(ROOT / "constraints" / "floors.py"))


def test_min_constraints_are_generated_from_pyproject():
    committed = (ROOT / "constraints" / "min.txt").read_text(encoding="utf-8")
    expected = FLOORS["constraints_text"](FLOORS["floors"]())
    assert committed == expected, "run: python3 constraints/floors.py > constraints/min.txt"


def test_every_dependency_declares_a_floor(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["numpy"]\n[project.optional-dependencies]\ntest = []\n')
    with pytest.raises(ValueError, match=r"'numpy' needs a single '>=' floor"):
        FLOORS["floors"](pyproject)
