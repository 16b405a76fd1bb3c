"""Run-folder ownership: one live run per folder, and a run that finished nothing never blocks a new one; each
split's checkpoints in the runtime's format (the previous release's single file is refused by name)."""
from __future__ import annotations

import warnings

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.training import TrainConfig, load_checkpoint, save_checkpoint, train
from mst_clipiqa.reward.training import trainer as trainer_module
from mst_clipiqa.runtime.checkpoints import complete_checkpoints
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


def test_a_damaged_or_lost_run_json_is_named_on_resume(small_set, tmp_path):
    config = TrainConfig(**FAST, cache_dir=str(tmp_path / "cache"))
    train(tiny(), small_set, config, tmp_path / "run")
    run_json = tmp_path / "run" / "run.json"
    run_json.write_bytes(run_json.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"cannot resume: {run_json} is damaged \(JSONDecodeError"):
        train(tiny(), small_set, config, tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(), small_set, config, tmp_path / "run")
    run_json.unlink()  # lost: what the finished epochs were trained with cannot be checked either
    with pytest.raises(ValueError, match=rf"cannot resume: .*No such file or directory: '{run_json}'"):
        train(tiny(), small_set, config, tmp_path / "run", resume=True)


def _optimizer() -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()
    return optimizer


def test_a_split_keeps_its_newest_checkpoint_and_reads_it_back(tmp_path):
    optimizer = _optimizer()
    for epoch in (1, 2):
        save_checkpoint(tmp_path, {"w": torch.full((2,), float(epoch))}, {"w": torch.zeros(2)}, optimizer,
                        {"epoch": epoch, "history": [epoch]}, {"w": torch.ones(2)})
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002"]
    saved = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    back = load_checkpoint(tmp_path)
    assert back.meta["progress"] == {"epoch": 2, "history": [2]}
    model, best, ema = (back.part(name)["w"] for name in ("model", "best", "ema"))
    assert torch.equal(model, torch.full((2,), 2.)) and torch.equal(best, torch.zeros(2))
    assert torch.equal(ema, torch.ones(2))
    fresh = _optimizer()
    back.restore(fresh)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], saved)


def test_a_folder_without_a_checkpoint_of_this_release_is_named(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"the previous release's single file")
    with pytest.raises(ValueError, match=r"holds no checkpoint of this release; .*checkpoint\.safetensors is not read"):
        load_checkpoint(tmp_path)
