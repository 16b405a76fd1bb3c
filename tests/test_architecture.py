"""The layers hold: import contracts bite, and the light entry points stay light."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = "sorted({m.split('.')[0] for m in sys.modules} & {'diffusers', 'matplotlib'})"


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_scorer_loads_neither_diffusers_nor_matplotlib():
    assert python(f"import sys, reward; print({HEAVY})") == "[]"


def test_cli_help_does_not_import_diffusers():
    code = ("import sys\nfrom mst_clipiqa.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'diffusers'}))")
    assert python(code) == "[]"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script)], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


def lint_with_import(root: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the packages in which ``module`` (a path below them) gained ``line``."""
    shutil.copytree(ROOT / "mst_clipiqa", root / "mst_clipiqa", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return lint_imports(root)


def test_layer_contracts_hold_and_an_upward_import_breaks_them(tmp_path):
    assert lint_imports(ROOT).returncode == 0
    done = lint_with_import(tmp_path, "mst_clipiqa/reward/model/fusion.py",
                            "import mst_clipiqa.reward.training  # an upward import")
    assert done.returncode != 0
    assert "mst_clipiqa.reward.model.fusion -> mst_clipiqa.reward.training" in done.stdout


def test_integrations_importing_reward_training_breaks_a_contract(tmp_path):
    done = lint_with_import(tmp_path, "mst_clipiqa/integrations/finetune/base.py",
                            "import mst_clipiqa.reward.training")
    assert done.returncode != 0
    assert "integrations does not import reward.training" in done.stdout and "BROKEN" in done.stdout


def test_no_module_imports_one_that_imports_it_back():
    import grimp

    graph = grimp.build_graph("mst_clipiqa", exclude_type_checking_imports=True)
    circles = [(m, n) for m in sorted(graph.modules) for n in graph.find_modules_directly_imported_by(m)
               if graph.find_shortest_chain(importer=n, imported=m)]
    assert circles == []


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "mst_clipiqa").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}, f"split these modules by concept: {long}"
