"""Trackers: TensorBoard's event file holds every logged scalar and the sample grids; bad names fail clearly."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward


def test_tensorboard_event_file_holds_the_logged_scalars_and_grids(tmp_path):
    torch.manual_seed(0)
    rewards = {"quality": MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A"))),
               "alignment": MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="B")))}
    config = RewardFinetuneConfig(num_inference_steps=3, base_distance_coeff=0.1,
                                  reward_weights={"quality": 1.0, "alignment": 0.5},
                                  run=RunConfig(max_steps=3, learning_rate=1e-2, output_dir=str(tmp_path),
                                                log_with="tensorboard", tracker_project="tb", sample_every=2,
                                                sample_prompts=("a cat",), sample_seeds=(0, 1), progress_bar=False))
    RewardFinetuner(tiny_sd_pipeline(), rewards, ["a red car", "a cat on a sofa"], config).train()

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    history = json.loads((tmp_path / "log.json").read_text())["history"]
    expected = ["reward", "reward_std", "reward/quality", "reward/quality_std", "reward/alignment",
                "reward/alignment_std", "penalty", "loss", "grad_norm", "lr"]
    assert set(expected) <= set(events.Tags()["scalars"])
    for tag in expected:
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([r[tag] for r in history], rel=1e-6), tag
    assert history[-1]["penalty"] > 0  # the DRaFT+ penalty is a real number once the LoRA moved
    assert [e.step for e in events.Images("samples")] == [0, 2]
    assert events.Images("samples")[0].width == 2 * 32  # two seeds side by side


def test_unknown_or_missing_trackers_are_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown tracker"):
        RewardFinetuneConfig(run=RunConfig(log_with="tensorbored", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="log_with needs output_dir"):
        RewardFinetuneConfig(run=RunConfig(log_with="tensorboard"))
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    config = RewardFinetuneConfig(run=RunConfig(log_with="tensorboard", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="pip install tensorboard"):
        RewardFinetuner(tiny_sd_pipeline(), MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny())), ["a cat"], config)
