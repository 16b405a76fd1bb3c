import warnings

import numpy as np
import pytest
import torch

from mst_clipiqa.reward.training.metrics import evaluate, krcc, logistic4, logistic4_fit, plcc, rmse, srcc, summarize


def test_perfect_monotone():
    x = np.arange(10.0)
    y = np.exp(x / 3)
    assert srcc(x, y) == pytest.approx(1.0)
    assert krcc(x, y) == pytest.approx(1.0)
    assert srcc(x, -y) == pytest.approx(-1.0)
    assert plcc(x, 2 * x + 1) == pytest.approx(1.0)
    assert plcc(x, y) < 0.95  # nonlinear: linear PLCC is below 1


def test_hand_computed_small_cases():
    pred, target = [1, 2, 3, 4], [1, 3, 2, 4]
    # one discordant pair of six: tau = (5 - 1) / 6; Spearman 1 - 6 * 2 / (4 * 15) = 0.8
    assert krcc(pred, target) == pytest.approx(4 / 6)
    assert srcc(pred, target) == pytest.approx(0.8)
    assert plcc(pred, target) == pytest.approx(0.8)
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))


def test_accepts_tensors_and_validates():
    assert srcc(torch.tensor([1.0, 2.0, 3.0], requires_grad=True), torch.tensor([3, 4, 9])) == 1.0
    with pytest.raises(ValueError, match="pred has 3 values but target has 2"):
        srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="target contains 1 non-finite"):
        plcc([1, 2, 3], [1, np.nan, 3])


def test_constant_prediction_returns_nan_with_warning():
    for metric in (srcc, krcc, plcc):
        with pytest.warns(RuntimeWarning, match="pred constant; correlation undefined"):
            assert np.isnan(metric([2, 2, 2, 2], [1, 2, 3, 4]))
    with pytest.warns(RuntimeWarning, match="constant"):
        result = evaluate([1, 1, 1, 1], [1, 2, 3, 4])
    assert np.isnan(result["srcc"]) and np.isnan(result["plcc_logistic"])
    assert result["rmse"] == pytest.approx(np.sqrt((0 + 1 + 4 + 9) / 4))


def test_logistic_fit_recovers_known_curve():
    x = np.linspace(-3, 3, 40)
    params = (5.0, 1.0, 0.5, 0.8)
    y = logistic4(x, *params)
    fitted = logistic4_fit(x, y)
    assert np.allclose(logistic4(x, *fitted), y, atol=1e-6)
    assert plcc(x, y, logistic=True) == pytest.approx(1.0, abs=1e-9)
    assert plcc(x, y) < 0.99
    assert plcc(-x, y, logistic=True) == pytest.approx(1.0, abs=1e-6)  # decreasing relation


def test_logistic_fallback_warns_and_uses_linear(monkeypatch):
    import mst_clipiqa.reward.training.metrics as m

    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(m.optimize, "curve_fit", fail)
    x, y = [1, 2, 3, 4, 5], [1, 3, 2, 5, 4]
    with pytest.warns(RuntimeWarning, match="logistic fit failed.*falling back to linear PLCC"):
        value = plcc(x, y, logistic=True)
    assert value == pytest.approx(plcc(x, y))


def test_evaluate_and_summarize():
    rng = np.random.default_rng(0)
    target = rng.normal(size=50)
    pred = target + 0.3 * rng.normal(size=50)
    result = evaluate(pred, target)
    assert set(result) == {"srcc", "plcc", "plcc_logistic", "krcc", "rmse"}
    assert result["srcc"] == pytest.approx(srcc(pred, target))
    assert 0.8 < result["plcc"] <= result["plcc_logistic"] + 0.02
    runs = [{"srcc": 0.8, "plcc": 0.7}, {"srcc": 0.9, "plcc": 0.9}, {"srcc": 0.7, "plcc": 0.8}]
    summary = summarize(runs)
    assert summary["srcc"]["mean"] == pytest.approx(0.8)
    assert summary["srcc"]["median"] == pytest.approx(0.8)
    assert summary["srcc"]["std"] == pytest.approx(0.1)  # sample std, ddof=1
    assert summary["plcc"]["count"] == 3
    with pytest.warns(RuntimeWarning, match="1 of 2 'srcc' values are missing or nan"):
        partial = summarize([{"srcc": 0.5}, {"srcc": float("nan")}])
    assert partial["srcc"]["mean"] == 0.5 and partial["srcc"]["count"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(summarize([{"srcc": 0.5}])["srcc"]["std"])
