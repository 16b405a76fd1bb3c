"""SIGTERM / SIGINT during training: the epoch in flight finishes, its checkpoint is written, the run stops with
``Preempted`` (exit status 143 / 130) and ``resume=True`` ends bit for bit where an uninterrupted run does."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.training import TrainConfig, Trainer, load_checkpoint, train
from mst_clipiqa.reward.training import trainer as trainer_module
from mst_clipiqa.runtime.preemption import Preempted

from .test_trainer import FAST, _weights, _without_timing, tiny


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=4)


def signalling(monkeypatch, at: tuple[int, int], signum: int) -> None:
    """``signum`` arrives while epoch ``at = (split, epoch)`` draws its batches."""
    original = trainer_module.epoch_batches

    def batches(indices, batch_size, seed, split_index, epoch, rank=0, world=1):
        if (split_index, epoch) == at:
            os.kill(os.getpid(), signum)
        return original(indices, batch_size, seed, split_index, epoch, rank, world)

    monkeypatch.setattr(trainer_module, "epoch_batches", batches)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_epoch_and_resume_is_bit_identical(small_set, tmp_path, monkeypatch, signum,
                                                                     status):
    config = TrainConfig(**{**FAST, "epochs": 3}, cache_dir=str(tmp_path / "cache"))
    straight = train(tiny(), small_set, config, tmp_path / "straight")
    signalling(monkeypatch, (1, 1), signum)
    with pytest.raises(Preempted, match=rf"stopped by {signal.Signals(signum).name} after epoch 2 of split 1.*"
                                        "--resume") as stop:
        train(tiny(), small_set, config, tmp_path / "stopped")
    assert stop.value.exit_status == status
    assert load_checkpoint(tmp_path / "stopped" / "split_01").progress["epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    epochs_run = []
    resumed = Trainer(tiny(), small_set, config, tmp_path / "stopped", resume=True,
                      on_epoch_end=lambda k, e, record: epochs_run.append((k, e))).run()
    assert epochs_run == [(1, 2)]  # nothing is redone
    for name, tensor in _weights(tmp_path / "straight").items():
        assert torch.equal(tensor, _weights(tmp_path / "stopped")[name]), name
    assert json.dumps(resumed["summary"], sort_keys=True) == json.dumps(straight["summary"], sort_keys=True)
    assert json.dumps(_without_timing(resumed)) == json.dumps(_without_timing(straight))
