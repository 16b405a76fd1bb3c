"""Run-folder ownership: one live run per folder, and a run that finished nothing never blocks a new one."""
from __future__ import annotations

import warnings

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.training import TrainConfig, train
from mst_clipiqa.reward.training import trainer as trainer_module
from mst_clipiqa.runtime.runs import RunLock

FAST = dict(epochs=1, lr=1e-3, batch_size=16, n_splits=1, progress=False, cpu=True)


def tiny() -> MSTCLIPIQA:
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A"))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=3, levels=(0.5, 1.0))


def test_a_run_that_failed_before_its_first_epoch_does_not_block_a_fresh_start(small_set, tmp_path, monkeypatch):
    config = TrainConfig(**FAST, cache_dir=str(tmp_path / "cache"))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(trainer_module, "epoch_batches", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(tiny(), small_set, config, tmp_path / "run")
    monkeypatch.undo()
    assert (tmp_path / "run" / "run.json").exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny(), small_set, config, tmp_path / "run")  # a plain rerun, the same settings: nothing to say
    assert not [w for w in caught if "run.json" in str(w.message)]

    for leftover in (tmp_path / "run").glob("split_*/*"):
        leftover.unlink()  # as if the run had failed before its first epoch again
    (tmp_path / "run" / "report.json").unlink()
    (tmp_path / "run" / "run.json").write_text('{"train": {"lr"')  # and its run.json were cut short
    other = TrainConfig(**{**FAST, "lr": 1e-2}, cache_dir=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match=r"run\.json is from a run that finished no epoch; starting afresh"):
        report = train(tiny(), small_set, other, tmp_path / "run")
    assert report["settings"]["train"]["lr"] == 1e-2


def test_a_folder_in_use_refuses_a_second_start(small_set, tmp_path):
    config = TrainConfig(**FAST, cache_dir=str(tmp_path / "cache"))
    held = RunLock(tmp_path / "run").acquire()  # what a live run holds; its own open file, as another process
    with pytest.raises(ValueError, match=r"run is in use by another run; wait for it to finish"):
        train(tiny(), small_set, config, tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()
    held.release()
    train(tiny(), small_set, config, tmp_path / "run")
    RunLock(tmp_path / "run").acquire().release()  # the finished run let go of the folder


def test_a_damaged_run_json_is_named_on_resume(small_set, tmp_path):
    config = TrainConfig(**FAST, cache_dir=str(tmp_path / "cache"))
    train(tiny(), small_set, config, tmp_path / "run")
    run_json = tmp_path / "run" / "run.json"
    run_json.write_bytes(run_json.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"cannot resume: {run_json} is damaged \(JSONDecodeError"):
        train(tiny(), small_set, config, tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(), small_set, config, tmp_path / "run")
