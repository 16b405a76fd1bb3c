"""``mst-clipiqa train`` stopped by SIGTERM: one line saying how to resume, exit status 143, and --resume finishes."""
from __future__ import annotations

import os
import signal

from mst_clipiqa.cli import main
from mst_clipiqa.reward.training import trainer as trainer_module
from tests.conftest import SAMPLE


def test_train_stopped_by_sigterm_says_how_to_resume_and_exits_143(tmp_path, monkeypatch, capsys):
    args = ["train", "--model", "tiny", "--dataset", "agiqa3k", "--data", str(SAMPLE), "--out", str(tmp_path / "run"),
            "--epochs", "2", "--n-splits", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu"]
    original = trainer_module.epoch_batches

    def batches(indices, batch_size, seed, split_index, epoch, rank=0, world=1):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(indices, batch_size, seed, split_index, epoch, rank, world)

    monkeypatch.setattr(trainer_module, "epoch_batches", batches)
    capsys.readouterr()
    assert main(args) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mst-clipiqa train: stopped by SIGTERM in epoch 2 of split 0 (cut short, it runs again "
                              "on resume); checkpoint of epoch 1 in ")
    assert "--resume" in err[-1]
    assert (tmp_path / "run" / "split_00" / "checkpoints" / "step_00000001" / "state.safetensors").is_file()
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert (tmp_path / "run" / "report.json").is_file()


def test_train_stopped_while_encoding_features_stops_after_the_batch_and_keeps_the_cache(tmp_path, monkeypatch,
                                                                                         capsys):
    from mst_clipiqa.reward.training import feature_cache

    args = ["train", "--model", "tiny", "--dataset", "agiqa3k", "--data", str(SAMPLE), "--out", str(tmp_path / "run"),
            "--epochs", "1", "--n-splits", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu",
            "--encode-batch-size", "4"]
    original, saved = feature_cache.save_entry, []

    def save_entry(tensors, path):
        if not saved:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the first batch is being stored
        saved.append(path)
        original(tensors, path)

    monkeypatch.setattr(feature_cache, "save_entry", save_entry)
    capsys.readouterr()
    assert main(args) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mst-clipiqa train: stopped by SIGTERM while encoding features: 4 of ")
    assert "--resume" in err[-1] and len(saved) == 4  # the batch in hand is stored, no further one is encoded
    assert all(p.is_file() for p in saved)
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert (tmp_path / "run" / "report.json").is_file()


def test_sigterm_outside_a_trainer_is_one_line_and_exit_143(tmp_path, monkeypatch, capsys):
    """A phase with no safe point of its own (here scoring) stops as Ctrl-C does: one line, status 143, and the
    process's SIGTERM handler is given back afterwards."""
    from PIL import Image

    from mst_clipiqa.reward import MSTCLIPIQAReward

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")

    def score_outputs(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(MSTCLIPIQAReward, "score_outputs", score_outputs)
    before = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "a.png"), "--model", "tiny"]) == 143
    assert capsys.readouterr().err.strip().splitlines() == ["mst-clipiqa score: stopped by SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before
