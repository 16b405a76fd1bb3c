"""SIGTERM / SIGINT during training: the epoch in flight is given up at its next batch (the checkpoint is the last
finished epoch's), the run stops with ``Preempted`` (exit status 143 / 130) and ``resume=True`` ends bit for bit
where an uninterrupted run does."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.training import TrainConfig, Trainer, load_checkpoint, train
from mst_clipiqa.reward.training import trainer as trainer_module
from mst_clipiqa.runtime.preemption import Preempted

from .test_trainer import FAST, _weights, assert_same_report, tiny


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=4)


def signalling(monkeypatch, at: tuple[int, int], signum: int) -> dict:
    """``signum`` arrives during the first batch of epoch ``at = (split, epoch)``; counts the batches after it."""
    original, loss = trainer_module.epoch_batches, Trainer.loss
    seen = {"armed": False, "sent": False, "after": 0}

    def batches(indices, batch_size, seed, split_index, epoch, rank=0, world=1):
        seen["armed"] = (split_index, epoch) == at
        return original(indices, batch_size, seed, split_index, epoch, rank, world)

    def signalled_loss(self, scores, indices):
        if seen["sent"]:
            seen["after"] += 1
        elif seen["armed"]:
            seen["sent"] = True
            os.kill(os.getpid(), signum)
        return loss(self, scores, indices)

    monkeypatch.setattr(trainer_module, "epoch_batches", batches)
    monkeypatch.setattr(Trainer, "loss", signalled_loss)
    return seen


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_gives_the_epoch_up_at_the_next_batch_and_resume_is_bit_identical(small_set, tmp_path, monkeypatch,
                                                                                    signum, status):
    config = TrainConfig(**{**FAST, "epochs": 3}, cache_dir=str(tmp_path / "cache"))
    batches = []
    monkeypatch.setattr(Trainer, "loss", lambda self, *a, _loss=Trainer.loss: batches.append(1) or _loss(self, *a))
    straight = train(tiny(), small_set, config, tmp_path / "straight")
    assert len(batches) >= 2 * 3 * 2  # several batches an epoch: the stop is inside one
    monkeypatch.undo()
    seen = signalling(monkeypatch, (1, 1), signum)
    with pytest.raises(Preempted, match=rf"stopped by {signal.Signals(signum).name} in epoch 2 of split 1 \(cut "
                                        r"short, it runs again on resume\); checkpoint of epoch 1 in .*--resume"
                       ) as stop:
        train(tiny(), small_set, config, tmp_path / "stopped")
    assert stop.value.exit_status == status and seen["after"] == 0  # not one batch more
    assert load_checkpoint(tmp_path / "stopped" / "split_01").meta["progress"]["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    epochs_run = []
    resumed = Trainer(tiny(), small_set, config, tmp_path / "stopped", resume=True,
                      on_epoch_end=lambda k, e, record: epochs_run.append((k, e))).run()
    assert epochs_run == [(1, 1), (1, 2)]  # the epoch cut short, then the rest
    for name, tensor in _weights(tmp_path / "straight").items():
        assert torch.equal(tensor, _weights(tmp_path / "stopped")[name]), name
    assert_same_report(resumed, straight, (tmp_path / "straight", tmp_path / "stopped"))


def test_a_signal_in_a_splits_first_epoch_says_nothing_of_it_is_saved(small_set, tmp_path, monkeypatch):
    config = TrainConfig(**{**FAST, "epochs": 2}, cache_dir=str(tmp_path / "cache"))
    signalling(monkeypatch, (0, 0), signal.SIGTERM)
    with pytest.raises(Preempted, match=r"in epoch 1 of split 0 .*; nothing of split 0 saved yet; run the same "
                                        "command again with --resume"):
        train(tiny(), small_set, config, tmp_path / "stopped")
