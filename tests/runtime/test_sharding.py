"""Shardings the generator trainers cannot run are refused in one line (the sharded runs themselves:
tests/integrations/finetune/test_sharding.py)."""
from types import SimpleNamespace

import pytest

from mst_clipiqa.runtime.processes import new_accelerator
from mst_clipiqa.runtime.sharding import check_sharding


@pytest.mark.parametrize(("env", "match"), [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "need fsdp_version: 2"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
])
def test_a_sharding_the_trainers_cannot_run_is_one_line(monkeypatch, env, match):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match) as caught:
        new_accelerator(cpu=True)
    assert "\n" not in str(caught.value)


def test_an_accelerator_built_with_fsdp1_is_refused_in_one_line():
    accelerator = SimpleNamespace(distributed_type=SimpleNamespace(value="FSDP"),
                                  state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=1)))
    with pytest.raises(ValueError, match="FSDP version 1 .* need fsdp_version: 2"):
        check_sharding(accelerator)
    check_sharding(SimpleNamespace(distributed_type=SimpleNamespace(value="MULTI_CPU")))  # data parallel: fine
