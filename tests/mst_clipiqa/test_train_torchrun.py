"""``mst-clipiqa train`` under ``torchrun --nproc_per_node 2`` on the CPU (gloo): one run, reported once."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mst_clipiqa.reward import MSTCLIPIQA, load_model
from mst_clipiqa.reward.datasets import load_dataset, make_splits
from mst_clipiqa.reward.training import FeatureCache, load_checkpoint, predict_features, to_label_units
from mst_clipiqa.reward.training.metrics import evaluate, srcc

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("torchrun_train.py")


def test_two_processes_train_one_model_and_report_once(sample_dir, tmp_path):
    out, cache, probes = tmp_path / "run", tmp_path / "cache", tmp_path / "probes"
    probes.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER),
               str(probes), "train", "--model", "tiny", "--dataset", "agiqa3k", "--data", str(sample_dir),
               "--out", str(out), "--cache-dir", str(cache), "--epochs", "2", "--n-splits", "1", "--lr", "1e-3",
               "--split-by", "image", "--test-fraction", "0.2", "--val-fraction", "0.1",  # 33 training samples
                                                                                        # of 48: one gets a pad
               "--quiet"]  # no --cpu: without CUDA the launcher's processes run on the CPU anyway
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes (gloo), also on a GPU machine
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    # one report, not one per process: the recipe once for each of the two starts, the table once
    assert done.stdout.count("recipe protocol:") == 2 and done.stdout.count("report:") == 1
    assert done.stdout.count("test, mean (std) over 1 split(s)") == 1

    ranks = [json.loads((probes / f"rank{r}.json").read_text()) for r in range(2)]
    # a second plain start is refused on both processes, and said once
    assert [r["second_start"] for r in ranks] == [2, 2] and done.stderr.count("already holds a run") == 1
    dataset = load_dataset("agiqa3k", sample_dir)
    split = make_splits(dataset, 1, test_fraction=0.2, val_fraction=0.1, seed=0)[0]
    # the same weights on both processes after every optimiser step (2 epochs, batches of 8 per process)
    per_process = math.ceil(len(split.train) / 2)
    assert len(split.train) % 2 == 1 and len(ranks[0]["steps"]) == 2 * math.ceil(per_process / 8)
    assert ranks[0]["steps"] == ranks[1]["steps"]
    for mine, other in zip(ranks[0]["epochs"], ranks[1]["epochs"]):
        assert mine["world"] == 2
        # distinct data: together the whole training part, shared only by the one batch that wraps around
        assert set(mine["samples"]) | set(other["samples"]) == set(split.train)
        assert len(set(mine["samples"]) & set(other["samples"])) <= 8

    report = json.loads((out / "report.json").read_text())
    result = json.loads((out / "split_00" / "result.json").read_text())
    predictions = result["test_predictions"]["quality"]
    assert predictions["mos"] == dataset.score_array("quality")[split.test].tolist()
    expected = evaluate(np.array(predictions["pred"]), np.array(predictions["mos"]))
    for name, value in report["splits"][0]["test"]["quality"].items():
        assert value == pytest.approx(expected[name], abs=1e-9), name
    # gathered in order, padding dropped: the models scored here in one process give the same results
    model = MSTCLIPIQA.from_pretrained(out / "model")
    features = FeatureCache(cache, model, progress=False).features([s.image for s in dataset.samples],
                                                                  [s.prompt for s in dataset.samples])
    alone = to_label_units(model, dataset, "quality",
                           predict_features(model, features, split.test, ["quality"])["quality"])
    np.testing.assert_allclose(predictions["pred"], alone, rtol=0, atol=1e-5)
    untrained = predict_features(load_model("tiny", seed=0), features, split.val, ["quality"])["quality"]
    assert result["untrained"]["val"]["quality"]["srcc"] == pytest.approx(
        srcc(untrained, dataset.score_array("quality")[split.val]), abs=1e-6)


def test_sigterm_to_one_process_stops_both_at_the_same_batch(sample_dir, tmp_path):
    out, probes = tmp_path / "run", tmp_path / "probes"
    probes.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER),
               str(probes), "train", "--model", "tiny", "--dataset", "agiqa3k", "--data", str(sample_dir),
               "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--epochs", "3", "--n-splits", "1",
               "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "SIGTERM_RANK": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    # torchrun tears the group down at the first exit and may report only that one; the ranks' own records
    # below show that both stopped after the same epoch
    assert done.stderr.count("exitcode  : 143") >= 1, done.stderr[-4000:]
    assert "stopped by SIGTERM in epoch 2 of split 0 (cut short" in done.stderr
    ranks = [json.loads((probes / f"rank{r}.json").read_text()) for r in range(2)]
    # both gave epoch 2 up at its first batch: as many optimizer steps, the same weights
    assert [[e["epoch"] for e in r["epochs"]] for r in ranks] == [[0, 1], [0, 1]]
    assert ranks[0]["steps"] and ranks[0]["steps"] == ranks[1]["steps"]
    assert load_checkpoint(out / "split_00").meta["progress"]["epoch"] == 1
