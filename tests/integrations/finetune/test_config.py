"""The trainers' configs: one name per meaning, the run settings composed, torch-free modules, old forms mapped."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mst_clipiqa.integrations import DPOConfig, PolicyFinetuneConfig, RewardFinetuneConfig, RunConfig
from mst_clipiqa.integrations.finetune.config import flat_settings, from_flat_settings

ROOT = Path(__file__).resolve().parents[3]
CONFIG_MODULES = ["config", "policy_config", "dpo_config", "method_configs"]

# Each package on the way is a bare module (its __init__ not run), so only the config modules' own imports count.
BARE_PACKAGES = """
import sys, types
sys.modules["torch"] = None
for name in ["mst_clipiqa", "mst_clipiqa.integrations", "mst_clipiqa.integrations.finetune",
             "mst_clipiqa.integrations.pipelines", "mst_clipiqa.reward", "mst_clipiqa.reward.utils"]:
    package = types.ModuleType(name)
    package.__path__ = [str(__import__("pathlib").Path("mst_clipiqa", *name.split(".")[1:]))]
    sys.modules[name] = package
"""


def test_the_config_modules_import_no_torch():
    modules = ", ".join(f"mst_clipiqa.integrations.finetune.{m}" for m in CONFIG_MODULES)
    code = BARE_PACKAGES + f"import {modules}\nprint(sorted(m for m in sys.modules if m.split('.')[0] in " \
                           "('numpy', 'PIL', 'diffusers', 'accelerate', 'transformers')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_field_is_shadowed_and_each_method_reads_its_own():
    for config_cls in (RewardFinetuneConfig, PolicyFinetuneConfig, DPOConfig):
        config = config_cls()
        assert isinstance(config.run, RunConfig)
        own = set(config.to_dict()) - {"run"}
        assert not own & set(RunConfig().to_dict()), config_cls.__name__
    assert RewardFinetuneConfig().eta == 0.0 and PolicyFinetuneConfig().eta == 1.0  # each its own default


def test_the_flat_forms_of_the_release_before_still_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="run settings are composed now"):
        config = RewardFinetuneConfig(max_steps=3, kl_coeff=0.2)
    assert config.run.max_steps == 3 and config.base_distance_coeff == 0.2
    with pytest.warns(DeprecationWarning, match=r"config.max_steps is config.run.max_steps now"):
        assert config.max_steps == 3
    with pytest.warns(DeprecationWarning, match="num_inference_steps"):
        assert PolicyFinetuneConfig(num_steps=4).num_inference_steps == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the composed form warns about nothing
        PolicyFinetuneConfig(kl_coeff=0.04, run=RunConfig(max_steps=2))


def test_flat_settings_map_a_recorded_config_old_or_new():
    new = RewardFinetuneConfig(base_distance_coeff=0.1, run=RunConfig(max_steps=2))
    flat = flat_settings(new.to_dict())
    assert flat["max_steps"] == 2 and flat["base_distance_coeff"] == 0.1 and "run" not in flat
    old = {**RunConfig(max_steps=2).to_dict(), "method": "draft", "kl_coeff": 0.1}  # as the flat release wrote it
    assert flat_settings(old, RewardFinetuneConfig.renamed)["base_distance_coeff"] == 0.1
    assert from_flat_settings(RewardFinetuneConfig, flat) == new
