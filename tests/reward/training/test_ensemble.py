"""Training an ensemble of fusions with their heads on bootstrap resamples; saved and loaded as one model."""
from __future__ import annotations

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.model import set_ensemble
from mst_clipiqa.reward.training import TrainConfig, Trainer, train
from mst_clipiqa.reward.training.bootstrap import bootstrap_counts

FAST = dict(epochs=2, lr=1e-3, batch_size=16, n_splits=1, progress=False, cpu=True)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=3)


def tiny() -> MSTCLIPIQA:
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A"))


def test_bootstrap_counts_resample_the_training_part_and_depend_on_seed_split_and_member_alone():
    train_part = [0, 2, 3, 5, 7, 8]
    counts = bootstrap_counts(train_part, 10, 3, seed=0, split_index=1)
    assert counts.shape == (3, 10) and counts.sum(1).tolist() == [6.0] * 3
    assert counts[:, [1, 4, 6, 9]].sum() == 0  # only samples of the training part are drawn
    assert torch.equal(counts, bootstrap_counts(train_part, 10, 3, seed=0, split_index=1))
    assert not torch.equal(counts[0], counts[1]) or not torch.equal(counts[1], counts[2])
    assert not torch.equal(counts, bootstrap_counts(train_part, 10, 3, seed=0, split_index=2))


def test_members_trained_on_different_resamples_disagree_and_the_ensemble_saves_as_one_model(small_set, tmp_path):
    config = TrainConfig(**FAST, ensemble=3, cache_dir=str(tmp_path / "cache"))
    report = train(tiny(), small_set, config, tmp_path / "run")
    loaded = MSTCLIPIQA.from_pretrained(report["model_dir"])
    assert loaded.config.ensemble == 3 and len(loaded.members) == 2
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    result = MSTCLIPIQAReward(loaded)(images, return_uncertainty=True)
    assert bool((result.sources["ensemble"] > 1e-4).all())  # the members start as copies of one another
    with torch.no_grad():
        members = loaded.member_scores(*loaded.encode_images(images))[0]["quality"]
    torch.testing.assert_close(result.scores, members.mean(0))


def test_an_ensemble_of_copies_trained_on_one_resample_would_agree(small_set, tmp_path, monkeypatch):
    """The control of the test above: the same run with every member on the same resample keeps them equal."""
    from mst_clipiqa.reward.training import trainer as trainer_module

    def same_resample(train_part, n, members, seed, split_index):
        return bootstrap_counts(train_part, n, 1, seed, split_index).expand(members, n)

    monkeypatch.setattr(trainer_module, "bootstrap_counts", same_resample)
    model = tiny()
    config = TrainConfig(**FAST, ensemble=3, cache_dir=str(tmp_path / "cache"))
    Trainer(model, small_set, config, tmp_path / "run").run()
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    result = MSTCLIPIQAReward(model)(images, return_uncertainty=True)
    assert torch.allclose(result.sources["ensemble"], torch.zeros(4), atol=1e-5)


def test_set_ensemble_copies_member_zero_and_an_ensemble_refuses_lora():
    model = tiny()
    before = MSTCLIPIQAReward(model)(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    set_ensemble(model, 4)
    assert model.config.ensemble == 4 and len(model.members) == 3
    after = MSTCLIPIQAReward(model)(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="ensemble=2 with lora_rank=4"):
        TrainConfig(ensemble=2, lora_rank=4)
    with pytest.raises(ValueError, match="ensemble must be"):
        set_ensemble(model, 0)
