"""``mst_clipiqa`` re-exports the libraries' public API, lazily, as the same objects; the old names alias it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_public_names_are_the_same_objects():
    import integrations
    import mst_clipiqa
    import reward
    from mst_clipiqa import MSTCLIPIQAReward, RewardFinetuner, best_of_n

    assert MSTCLIPIQAReward is reward.MSTCLIPIQAReward
    assert best_of_n is integrations.best_of_n and RewardFinetuner is integrations.RewardFinetuner
    assert set(mst_clipiqa.__all__) == set(reward.__all__) | set(integrations.__all__)
    for source in (reward, integrations):
        assert all(getattr(mst_clipiqa, name) is getattr(source, name) for name in source.__all__)
    assert {"load_model", "best_of_n"} <= set(dir(mst_clipiqa))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        mst_clipiqa.nothing_here  # noqa: B018


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_the_package_imports_nothing_heavy():
    code = "import sys, mst_clipiqa\nprint(*(m in sys.modules for m in ('torch', 'mst_clipiqa.reward', 'reward')))"
    assert _fresh(code).split() == ["False", "False", "False"]


def test_the_old_names_are_the_same_modules():
    import integrations.finetune.base
    import mst_clipiqa.integrations.finetune.base
    import mst_clipiqa.reward.model.heads
    import reward.model.heads
    from reward.model import heads

    assert reward.model.heads is heads is mst_clipiqa.reward.model.heads
    assert integrations.finetune.base is mst_clipiqa.integrations.finetune.base
    assert heads.__spec__.name == heads.__name__ == "mst_clipiqa.reward.model.heads"  # its own spec, not the alias's
    with pytest.raises(ModuleNotFoundError, match="reward.no_such_module"):
        import reward.no_such_module  # noqa: F401


def test_a_users_own_reward_and_integrations_modules_hide_nothing(tmp_path):
    """A project with its own reward.py and integrations.py, first on the path, uses both and the library."""
    (tmp_path / "reward.py").write_text("SCORE = 1\n")
    (tmp_path / "integrations.py").write_text("NAME = 'mine'\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "import torch\n"
            "from mst_clipiqa import MSTCLIPIQAReward, best_of_n\n"
            "from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline\n"
            "import reward, integrations\n"
            "scores = MSTCLIPIQAReward.from_pretrained('tiny')(torch.rand(2, 3, 32, 32), ['a cat', 'a dog'])\n"
            "ranked = best_of_n(tiny_sd_pipeline(), 'a cat', MSTCLIPIQAReward.from_pretrained('tiny'), n=2,\n"
            "                   num_inference_steps=2)\n"
            "print(reward.SCORE, integrations.NAME, tuple(scores.shape), len(ranked.candidates))")
    assert _fresh(code).split() == ["1", "mine", "(2,)", "2"]


def test_modules_of_the_first_layout_name_their_new_path_and_runpy_works_under_the_old_names():
    import importlib
    import runpy

    for old, new in (("lora", "pipelines.lora"), ("reward_functions", "rewards")):  # moved: the error names where
        with pytest.raises(ImportError, match=rf"^integrations\.{old} moved: import mst_clipiqa\.integrations\.{new} "):
            importlib.import_module(f"integrations.{old}")
        importlib.import_module(f"mst_clipiqa.integrations.{new}")
    for name in ("reward.utils", "mst_clipiqa.reward.utils"):  # a package: the same error as under its own name
        with pytest.raises(ImportError, match=r"is a package and cannot be directly executed"):
            runpy.run_module(name)
    assert callable(runpy.run_module("reward.utils.files")["write_json"])
