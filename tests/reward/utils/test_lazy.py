"""Packages whose names load at first use: the exports listed once, under ``if TYPE_CHECKING:``."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
INIT = '''
from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:
    from .heavy import heavy
    from .light import LIGHT as light_name
__all__ = {names}
load_lazily(__name__)
'''


def package(root: Path, names: list[str]) -> None:
    (root / "lazypkg").mkdir()
    (root / "lazypkg" / "__init__.py").write_text(INIT.format(names=names))
    (root / "lazypkg" / "heavy.py").write_text("LOADED = True\n\ndef heavy():\n    return 'heavy'\n")
    (root / "lazypkg" / "light.py").write_text("LIGHT = 1\n")


def run(root: Path, code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root}:{ROOT}"})
    return done.stdout.strip() + "".join(done.stderr.strip().splitlines()[-1:])  # the error line, if any


def test_a_name_loads_when_first_read_and_keeps_its_value_over_its_submodule(tmp_path):
    package(tmp_path, ["heavy", "light_name"])
    out = run(tmp_path, """
        import sys, lazypkg
        print("lazypkg.heavy" in sys.modules, lazypkg.light_name, "lazypkg.heavy" in sys.modules)
        import lazypkg.heavy  # the import system binds the submodule on the package: the function stays
        print(lazypkg.heavy(), {"heavy", "light_name"} <= set(dir(lazypkg)))
    """)
    assert out.startswith("False 1 False\nheavy True"), out


def test_an_export_the_block_does_not_import_is_named_at_import(tmp_path):
    package(tmp_path, ["heavy", "missing"])
    assert "ImportError: lazypkg.__all__ names ['missing'], which its TYPE_CHECKING block does not import" in run(
        tmp_path, "import lazypkg")


@pytest.mark.parametrize("module", ["mst_clipiqa.reward", "mst_clipiqa.integrations",
                                    "mst_clipiqa.reward.training.config"])
def test_the_packages_and_the_training_config_import_no_torch(module):
    out = run(ROOT, f"import sys, {module}; print('torch' in sys.modules)")
    assert out.startswith("False"), out
