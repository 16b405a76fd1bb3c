"""Launcher processes: what the main process does alone, and a launcher whose processes end up alone."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mst_clipiqa.reward.training import distributed, new_accelerator
from mst_clipiqa.runtime import processes


def test_work_on_the_main_process_returns_its_result_and_raises_its_error():
    accelerator = new_accelerator(cpu=True)
    assert distributed.on_main(accelerator, lambda: 42) == 42

    def refuse():
        raise ValueError("already holds a run")

    with pytest.raises(ValueError, match="already holds a run"):
        distributed.on_main(accelerator, refuse)


def test_a_launcher_on_a_machine_without_cuda_gets_cpu_processes_and_a_lone_process_is_named(monkeypatch):
    settings = []

    def accelerate_that_ignores_the_launcher(**given):
        settings.append(given)
        return SimpleNamespace(num_processes=1, distributed_type="NO")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(processes, "Accelerator", accelerate_that_ignores_the_launcher)
    with pytest.warns(UserWarning, match="WORLD_SIZE=2 but accelerate runs this as one process"):
        new_accelerator(cpu=False, mixed_precision="no")
    assert settings == [{"cpu": True, "mixed_precision": "no"}]  # what gives gloo processes under torchrun
