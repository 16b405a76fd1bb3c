"""The template head (variant A): log-space temperature, its own learning rate, and the start-of-training check."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets import load_agiqa3k
from mst_clipiqa.reward.datasets.clip_geometry import clip_like_features
from mst_clipiqa.reward.model.heads import TemplateHead
from mst_clipiqa.reward.training import TrainConfig, Trainer
from mst_clipiqa.reward.training.features import CachedFeatures
from mst_clipiqa.reward.training.param_groups import param_groups


@pytest.fixture(scope="module")
def clip_like():
    return clip_like_features(96, dim=512)


def head_model(text: torch.Tensor, **config) -> MSTCLIPIQA:
    """Tiny towers (never run: the features are given) with CLIP ViT-B's 512-d embedding."""
    torch.manual_seed(0)
    config = MSTCLIPIQAConfig.tiny("A", **config)
    for backbone in (config.coarse, config.fine):
        backbone.arch["embed_dim"] = text.shape[1]
    model = MSTCLIPIQA(config)
    model.template_features = text
    return model


def test_clip_like_features_have_clip_geometry(clip_like):
    text = clip_like.text_features @ clip_like.text_features.T
    assert text[~torch.eye(5, dtype=torch.bool)].mean() == pytest.approx(0.9, abs=1e-4)
    cos = clip_like.f_coarse @ clip_like.text_features.T
    spread = (cos.max(1).values - cos.min(1).values).mean()
    assert 0.01 < spread < 0.05  # real CLIP's image-text cosines differ by ~0.01-0.03 across the levels


def run_start(clip_like, tmp_path, temperature: float) -> tuple[dict, list[str]]:
    model = head_model(clip_like.text_features, temperature_init=temperature)
    config = TrainConfig(epochs=1, n_splits=1, progress=False, cpu=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = Trainer(model, clip_like.dataset, config, tmp_path / str(temperature),
                         features=CachedFeatures(clip_like.f_coarse, clip_like.f_fine)).run()
    return report["saturation"]["quality"], [str(w.message) for w in caught if "start of training" in str(w.message)]


def test_saturation_warning_fires_on_a_saturated_start_only(clip_like, tmp_path):
    saturated, warned = run_start(clip_like, tmp_path, 1e5)
    assert saturated["saturated"] and saturated["entropy"] < 1e-2 and saturated["one_hot_fraction"] > 0.9
    assert len(warned) == 1 and "softmax is saturated" in warned[0] and "of samples one-hot" in warned[0]
    healthy, warned = run_start(clip_like, tmp_path, 100.0)
    assert not healthy["saturated"] and not healthy["negligible_gradient"] and warned == []
    assert healthy["entropy"] > 0.1 and healthy["fusion_grad_norm"] > 10 * healthy["weight_decay_grad_norm"]


def test_linear_temperature_state_dicts_still_load():
    head = TemplateHead()
    head.load_state_dict({"temperature": torch.tensor(37.0)})
    assert float(head.temperature) == pytest.approx(37.0)
    assert set(head.state_dict()) == {"log_temperature"}
    with pytest.raises(ValueError, match="temperature must be > 0"):
        head.load_state_dict({"temperature": torch.tensor(-1.0)})


def test_temperature_learns_at_its_own_rate_without_weight_decay(clip_like):
    model = head_model(clip_like.text_features)
    groups = param_groups(model, 1e-4, 1e-2)
    temperature = [g for g in groups if any(p is model.heads["quality"].log_temperature for p in g["params"])]
    assert len(temperature) == 1 and temperature[0]["lr"] == 1e-2 and temperature[0]["weight_decay"] == 0.0
    assert len(param_groups(model, 1e-4)) == 1


def variant_a_alone(model: MSTCLIPIQA, dataset, tmp_path, features: CachedFeatures | None = None, **config) -> dict:
    config = TrainConfig(**{"epochs": 60, "n_splits": 3, "init": "random", "outputs": ("quality",),
                            "progress": False, "cpu": True, "cache_dir": str(tmp_path / "cache"), **config})
    summary = Trainer(model, dataset, config, tmp_path / "run", features=features).run()["summary"]
    return {part: summary[part]["quality"]["srcc"]["mean"] for part in ("test", "probe_test")}


# The 48-image sample in the repository leaves 10 test images: SRCC there is noise for the head and the probe
# alike, so this check needs the 98-image AGIQA-3K sample (a folder in the loader's format).
SAMPLE_98 = Path(os.environ.get("MST_CLIPIQA_AGIQA3K_98", "agiqa3k-mini-98"))


@pytest.mark.skipif(not (SAMPLE_98 / "data.csv").is_file(),
                    reason=f"the 98-image AGIQA-3K sample is not at {SAMPLE_98} (set MST_CLIPIQA_AGIQA3K_98); "
                           "the shipped 48-image sample is too small for a test SRCC")
def test_variant_a_alone_reaches_its_probe_on_the_sample(tmp_path):
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A", fusion_hidden=128))
    srcc = variant_a_alone(model, load_agiqa3k(SAMPLE_98), tmp_path, lr=1e-3)
    print(srcc)  # measured: test 0.277, probe 0.280 (deterministic on the CPU; 0.270 with log tau at lr)
    assert srcc["test"] >= srcc["probe_test"] - 0.02


def test_variant_a_alone_reaches_its_probe_on_clip_like_features(tmp_path):
    # From the reference's random fusion start: weight decay 0.1 pulls the random part of the 512 x 512 maps (which
    # ~170 training samples do not constrain) away, and the average of the weights (EMA 0.99) smooths the noisy path
    # it leaves; that average is what is validated and kept. test - probe with seeds 0, 1, 2: -0.002, -0.004, -0.007
    # (raw weights at the same decay: -0.091, -0.050, -0.013; docs/template-head.md).
    data = clip_like_features(240)
    model = head_model(data.text_features, fusion_hidden=128)
    srcc = variant_a_alone(model, data.dataset, tmp_path, CachedFeatures(data.f_coarse, data.f_fine), lr=1e-3,
                           temperature_lr=1e-1, weight_decay=0.1, ema_decay=0.99, epochs=30)
    assert srcc["test"] >= srcc["probe_test"] - 0.02


def test_default_recipe_learns_variant_a_alone_on_clip_like_features(tmp_path):
    # The protocol's defaults (bar the run's length) from the reference's random start: the head must beat its own
    # untrained start by far and come near the probe (measured, seed 0: test 0.671, probe 0.735, untrained 0.343;
    # with log tau at the fusion's rate, the default before: 0.644); a head that does not learn at all (the -0.11
    # the issue saw on real images) fails both.
    data = clip_like_features(120)
    model = head_model(data.text_features, fusion_hidden=128)
    config = TrainConfig(epochs=20, n_splits=1, init="random", outputs=("quality",), progress=False, cpu=True)
    report = Trainer(model, data.dataset, config, tmp_path, features=CachedFeatures(data.f_coarse, data.f_fine)).run()
    test = report["splits"][0]["test"]["quality"]["srcc"]
    untrained = report["splits"][0]["untrained"]["test"]["quality"]["srcc"]
    probe = report["summary"]["probe_test"]["quality"]["srcc"]["mean"]
    print(f"test {test:.3f} untrained {untrained:.3f} probe {probe:.3f}")
    assert test >= untrained + 0.2 and test >= probe - 0.12


@pytest.mark.parametrize("temperature_lr, falls", [(None, False), (TrainConfig().temperature_lr, True)])
def test_default_temperature_rate_brings_a_saturated_tau_down(tmp_path, temperature_lr, falls):
    # tau at 1000 saturates the softmax; at the fusion's rate (None: the default before) log tau moves by ~1e-4 a
    # step and stays there, at the default's own rate it falls within a few epochs to where the head learns.
    data = clip_like_features(120)
    model = head_model(data.text_features, fusion_hidden=128, temperature_init=1000.0)
    config = TrainConfig(epochs=3, n_splits=1, init="random", outputs=("quality",), progress=False, cpu=True,
                         val_fraction=0.0, temperature_lr=temperature_lr)
    Trainer(model, data.dataset, config, tmp_path, features=CachedFeatures(data.f_coarse, data.f_fine)).run()
    tau = float(model.heads["quality"].temperature.detach())
    print(f"tau after 3 epochs: {tau:.1f}")
    assert (tau < 500.0) == falls
