"""The protocol's rule for small validation parts: fewer than ``min_val_groups`` prompts select no epoch."""
from __future__ import annotations

import warnings

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets import QualityDataset, QualitySample, make_splits
from mst_clipiqa.reward.training import TrainConfig, Trainer
from mst_clipiqa.reward.training.features import CachedFeatures
from mst_clipiqa.reward.training.protocol import small_validation_rule


def prompts_dataset(n_prompts: int, per_prompt: int = 4) -> QualityDataset:
    samples = [QualitySample(f"p{p}_{i}.png", f"prompt {p}", {"quality": float((p * 7 + i * 3) % 5 + 1)})
               for p in range(n_prompts) for i in range(per_prompt)]
    return QualityDataset(samples, name="prompts", outputs=("quality",), split_by="prompt")


def test_a_validation_part_of_one_prompt_joins_training_and_the_note_says_so():
    dataset = prompts_dataset(10)
    splits = make_splits(dataset, 3, by="prompt", seed=0)
    assert all(len({dataset.samples[i].prompt for i in s.val}) == 1 for s in splits)
    kept, note = small_validation_rule(splits, dataset, 3)
    assert note.count("\n") == 0 and "1 prompt(s), fewer than min_val_groups=3" in note
    for before, after in zip(splits, kept):
        assert after.val == [] and after.val_fraction == 0.0
        assert after.train == sorted(before.train + before.val) and after.test == before.test
    assert kept == make_splits(dataset, 3, val_fraction=0.0, by="prompt", seed=0)  # the --val-fraction 0 splits


def test_large_validation_parts_and_a_forced_minimum_are_unchanged():
    large = prompts_dataset(40)
    splits = make_splits(large, 3, by="prompt", seed=0)
    assert small_validation_rule(splits, large, 3) == (splits, None)  # 4 prompts each
    small = prompts_dataset(10)
    splits = make_splits(small, 3, by="prompt", seed=0)
    assert small_validation_rule(splits, small, 1) == (splits, None)


def tiny_run(dataset: QualityDataset, **config) -> tuple[MSTCLIPIQA, CachedFeatures, TrainConfig]:
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A"))
    dim = model.config.coarse.arch["embed_dim"]
    features = CachedFeatures(torch.randn(len(dataset), dim), torch.randn(len(dataset), dim))
    settings = {"epochs": 3, "n_splits": 2, "lr": 1e-3, "outputs": ("quality",), "progress": False, "cpu": True}
    return model, features, TrainConfig(**{**settings, **config})


@pytest.mark.parametrize("min_val_groups", [3, 1])  # 1: the user forces selection on the one prompt
def test_the_trainer_keeps_the_last_epoch_and_warns_once(tmp_path, min_val_groups):
    dataset = prompts_dataset(10, per_prompt=3)
    model, features, config = tiny_run(dataset, min_val_groups=min_val_groups)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = Trainer(model, dataset, config, tmp_path / "run", features=features).run()
    notes = [str(w.message) for w in caught if "min_val_groups" in str(w.message)]
    validated = [bool(h["val"]) for r in report["splits"] for h in r["history"]]
    if min_val_groups == 1:
        assert notes == [] and report["validation_note"] is None and all(validated)
        return
    assert notes == [report["validation_note"]] and not any(validated)
    assert [r["best_epoch"] for r in report["splits"]] == [3, 3]


def test_a_run_without_validation_resumes(tmp_path):
    """The best score of a split without validation is -inf, which the checkpoint's JSON stores as null."""
    dataset = prompts_dataset(10, per_prompt=3)

    def kill(*_):
        raise KeyboardInterrupt

    model, features, config = tiny_run(dataset, n_splits=1)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(model, dataset, config, tmp_path / "run", features=features, on_epoch_end=kill).run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = tiny_run(dataset, n_splits=1)[0]
        report = Trainer(fresh, dataset, config, tmp_path / "run", resume=True, features=features).run()
    assert report["splits"][0]["best_epoch"] == 3


@pytest.mark.parametrize("bad", [0, -1])
def test_min_val_groups_must_be_positive(bad):
    with pytest.raises(ValueError, match="min_val_groups must be >= 1"):
        TrainConfig(min_val_groups=bad)
