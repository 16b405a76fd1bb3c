"""The IQA trainer's average of the trained weights: what is validated is what is saved, and the checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets.clip_geometry import clip_like_features
from mst_clipiqa.reward.datasets.splits import make_splits
from mst_clipiqa.reward.training import TrainConfig, Trainer, load_checkpoint
from mst_clipiqa.reward.training.features import CachedFeatures
from mst_clipiqa.reward.training.metrics import srcc
from mst_clipiqa.reward.utils import read_tensors


def test_the_averaged_weights_are_validated_selected_saved_and_checkpointed(tmp_path):
    data = clip_like_features(64, dim=32)
    torch.manual_seed(0)
    config = MSTCLIPIQAConfig.tiny("A")
    for backbone in (config.coarse, config.fine):
        backbone.arch["embed_dim"] = 32
    model = MSTCLIPIQA(config)
    model.template_features = data.text_features
    checkpoints, split = [], make_splits(data.dataset, 1, 0.2, 0.25, "prompt", seed=0)[0]
    trainer = Trainer(model, data.dataset, TrainConfig(epochs=3, lr=1e-3, ema_decay=0.9, init="random",
                                                       progress=False, cpu=True), tmp_path / "run", [split],
                      features=CachedFeatures(data.f_coarse, data.f_fine),
                      on_epoch_end=lambda k, e, r: checkpoints.append(
                          load_checkpoint(tmp_path / "run" / "split_00")))
    report = trainer.run()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(set(c.part("ema")) == trained for c in checkpoints)
    assert not torch.equal(checkpoints[-1].part("ema")["fusion.W_c.weight"],
                           checkpoints[-1].part("model")["fusion.W_c.weight"])
    assert json.loads((tmp_path / "run" / "report.json").read_text())["settings"]["train"]["ema_decay"] == 0.9

    result = report["splits"][0]
    best, _ = read_tensors(tmp_path / "run" / "split_00" / "best.safetensors")
    best_epoch = checkpoints[result["best_epoch"] - 1]
    assert torch.equal(best["fusion.W_c.weight"], best_epoch.part("ema")["fusion.W_c.weight"])
    trainer.load_state(best)
    predicted = trainer.predict(split.val)["quality"]
    recorded = result["history"][result["best_epoch"] - 1]["val"]["quality"]["srcc"]
    assert srcc(predicted, data.dataset.score_array("quality")[list(split.val)]) == pytest.approx(recorded)
