"""The ridge probe: closed form, penalty by leave-one-out on the training part only."""
import numpy as np
import pytest
import torch

from mst_clipiqa.reward.datasets import QualityDataset, QualitySample, Split
from mst_clipiqa.reward.training import CachedFeatures, fit_ridge, linear_probe
from mst_clipiqa.reward.training.metrics import srcc


def test_ridge_fits_a_linear_signal_and_shrinks_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 30))
    y = x @ rng.normal(size=30) + 0.1 * rng.normal(size=120)
    probe = fit_ridge(x[:80], y[:80])
    assert srcc(probe.predict(x[80:]), y[80:]) > 0.97 and probe.alpha < 1e-2
    noise = fit_ridge(x[:80], rng.normal(size=80))
    assert noise.alpha > 0.1 and np.std(noise.predict(x[80:])) < 0.5  # no signal: heavy shrinkage
    with pytest.raises(ValueError, match="at least 3 training samples"):
        fit_ridge(x[:2], y[:2])


def test_linear_probe_uses_only_the_training_part_and_the_prompt_for_prompt_heads():
    rng = np.random.default_rng(1)
    n = 60
    prompts = [f"p{i % 6}" for i in range(n)]
    prompt_value = rng.normal(size=6)
    image = rng.normal(size=(n, 8)).astype(np.float32)
    quality = image[:, 0] * 2 + 3
    match = prompt_value[[i % 6 for i in range(n)]]  # depends on the prompt alone
    samples = [QualitySample(f"{i}.png", prompts[i], {"quality": float(quality[i]), "correspondence": float(match[i])})
               for i in range(n)]
    data = QualityDataset(samples, "toy", ("quality", "correspondence"))
    states = [torch.full((3, 4), float(v)) for v in prompt_value]
    features = CachedFeatures(torch.from_numpy(image), torch.from_numpy(image[:, :4].copy()), states,
                              torch.tensor([i % 6 for i in range(n)]))
    split = Split(list(range(40)), [], list(range(40, n)), n)
    result = linear_probe(features, data, split, ("quality", "correspondence"), prompt_outputs=("correspondence",))
    assert result["quality"]["test"]["srcc"] > 0.99 and result["quality"]["test"]["rmse"] < 0.05
    assert result["correspondence"]["test"]["srcc"] > 0.95  # six prompt values: ties
    blind = linear_probe(features, data, split, ("correspondence",))  # without the prompt it cannot know
    assert blind["correspondence"]["test"]["srcc"] < 0.5
