"""Labels in the data set's units: mapped onto each head's range for training, reported back in those units."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mst_clipiqa.reward import load_model
from mst_clipiqa.reward.datasets import load_agiqa3k
from mst_clipiqa.reward.training import TrainConfig, evaluate_model, train
from mst_clipiqa.reward.utils import rescale


def test_default_recipe_on_the_agiqa3k_sample_reports_in_its_units(sample_dir, tmp_path):
    """The issue's check: 0-5 labels (12% below the template head's 1) train without a range warning, and the
    report holds labels and predictions on 0-5; the saved model records the map."""
    data = load_agiqa3k(sample_dir)
    assert np.mean(data.score_array("quality") < 1) > 0.1
    config = TrainConfig(n_splits=2, epochs=4, cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = train(load_model("tiny", outputs=["quality", "correspondence"]), data, config, tmp_path / "run")
    assert not [w for w in caught if "range" in str(w.message)], [str(w.message) for w in caught]
    assert report["recipe"]["name"] == "protocol" and report["recipe"]["changed"] == {"n_splits": 2, "epochs": 4}
    assert report["label_ranges"] == {"quality": (0.0, 5.0), "correspondence": (0.0, 5.0)}
    result = json.loads((tmp_path / "run" / "split_00" / "result.json").read_text())
    split = report["splits"][0]
    for output in ("quality", "correspondence"):
        mos, pred = (np.array(result["test_predictions"][output][k]) for k in ("mos", "pred"))
        labels = data.score_array(output)
        assert set(mos) <= set(labels)  # raw labels, not mapped ones
        assert pred.min() >= 0.0 and pred.max() <= 5.0  # a [1, 5] template head mapped back onto 0-5
        rmse = np.sqrt(np.mean((pred - mos) ** 2))
        assert split["test"][output]["rmse"] == pytest.approx(rmse)
        assert set(split["probe"][output]) == {"test", "alpha"}
        assert report["summary"]["probe_test"][output]["srcc"]["count"] == 2
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["label_ranges"] == {"quality": [0.0, 5.0], "correspondence": [0.0, 5.0]}
    assert saved["score_ranges"]["quality"] == [1.0, 5.0]


def test_evaluation_maps_scores_onto_the_data_sets_units(sample_dir, tmp_path):
    data = load_agiqa3k(sample_dir).subset(range(12))
    model = load_model("tiny-hf", variant="B")  # a prompt head: nominal range 0-5
    data.label_ranges["quality"] = (0.0, 100.0)  # as if the labels were on AIGCIQA2023's MOSz scale
    result = evaluate_model(model, data, cache_dir=tmp_path, progress=False)
    head = evaluate_model(model, load_agiqa3k(sample_dir).subset(range(12)), cache_dir=tmp_path, progress=False)
    assert result["all"]["quality"]["srcc"] == pytest.approx(head["all"]["quality"]["srcc"])  # same ranks,
    assert result["all"]["quality"]["rmse"] != pytest.approx(head["all"]["quality"]["rmse"])  # other units
    assert rescale(np.array([0.0, 5.0]), (0.0, 5.0), data.label_ranges["quality"]).tolist() == [0.0, 100.0]
