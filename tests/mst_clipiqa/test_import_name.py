"""``mst_clipiqa`` re-exports reward's and integrations' public API, lazily, as the same objects."""
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
    out = _fresh("import sys, mst_clipiqa\nprint(*(m in sys.modules for m in ('torch', 'reward', 'integrations')))")
    assert out.split() == ["False", "False", "False"]


def test_a_users_own_reward_module_is_named_not_used(tmp_path):
    (tmp_path / "reward.py").write_text("SCORE = 1\n")  # a user's project with its own reward.py, first on the path
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "try:\n    from mst_clipiqa import MSTCLIPIQAReward\nexcept ImportError as error:\n    print(error)")
    out = _fresh(code)
    assert f"the name 'reward' is taken by {tmp_path / 'reward.py'}" in out and "Rename your reward.py" in out
