"""IQA evaluation metrics: SRCC, PLCC (optionally after a 4-parameter logistic), KRCC, RMSE.

Inputs are 1-d array-likes (lists, numpy arrays or torch tensors) of equal
length. A constant prediction or target has no defined correlation: the
correlation metrics then return ``nan`` with a warning instead of raising.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


def _as_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(array)))} non-finite value(s)")
    return array


def _pair(pred: Any, target: Any, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_array(pred, "pred"), _as_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} values but target has {t.size}; expected equal lengths")
    if p.size < minimum:
        raise ValueError(f"need at least {minimum} pairs, got {p.size}")
    return p, t


def _constant(p: np.ndarray, t: np.ndarray, metric: str) -> bool:
    which = [n for n, a in (("pred", p), ("target", t)) if np.ptp(a) == 0]
    if which:
        warnings.warn(f"{metric}: {' and '.join(which)} constant; correlation undefined, returning nan",
                      RuntimeWarning, stacklevel=3)
    return bool(which)


def srcc(pred: Any, target: Any) -> float:
    """Spearman rank-order correlation."""
    p, t = _pair(pred, target)
    return float("nan") if _constant(p, t, "srcc") else float(stats.spearmanr(p, t)[0])


def krcc(pred: Any, target: Any) -> float:
    """Kendall rank-order correlation (tau-b)."""
    p, t = _pair(pred, target)
    return float("nan") if _constant(p, t, "krcc") else float(stats.kendalltau(p, t)[0])


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error on the raw scales (no fitting)."""
    p, t = _pair(pred, target, minimum=1)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    z = -(np.asarray(x, dtype=np.float64) - b3) / np.abs(b4)
    return (b1 - b2) / (1.0 + np.exp(np.clip(z, -500.0, 500.0))) + b2


def _logistic4_jacobian(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    # Analytic, because finite differences stall when a parameter starts near 0 (e.g. b3 = mean
    # of centred predictions, ~1e-16): the relative step then vanishes.
    u = (x - b3) / np.abs(b4)
    sig = 1.0 / (1.0 + np.exp(np.clip(-u, -500.0, 500.0)))
    slope = (b1 - b2) * sig * (1.0 - sig)
    return np.stack([sig, 1.0 - sig, -slope / np.abs(b4), -slope * u / b4], axis=1)


def logistic4_fit(pred: Any, target: Any) -> np.ndarray:
    """Fit :func:`logistic4` mapping ``pred`` to ``target``; returns ``[b1, b2, b3, b4]``.

    The initial guess spans the target range, centred on the mean prediction
    with slope scale the prediction std, oriented by the sign of the linear
    correlation. Raises ``RuntimeError`` if the fit does not converge.
    """
    p, t = _pair(pred, target, minimum=4)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        raise RuntimeError("logistic fit needs non-constant pred and target")
    high, low = (t.max(), t.min()) if np.corrcoef(p, t)[0, 1] >= 0 else (t.min(), t.max())
    guess = [high, low, float(np.mean(p)), float(np.std(p))]
    # Only the parameters are used (and checked below); an unestimable or overflowing covariance is harmless.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        try:
            params, _ = optimize.curve_fit(logistic4, p, t, p0=guess, jac=_logistic4_jacobian,
                                           maxfev=10000)
        except (RuntimeError, ValueError) as exc:
            raise RuntimeError(f"logistic fit failed: {exc}") from exc
    if not np.all(np.isfinite(params)) or params[3] == 0:
        raise RuntimeError(f"logistic fit gave unusable parameters {params}")
    return params


def plcc(pred: Any, target: Any, logistic: bool = False) -> float:
    """Pearson linear correlation, optionally after mapping ``pred`` by a fitted logistic.

    If the logistic fit fails, warns and returns the linear PLCC.
    """
    p, t = _pair(pred, target)
    if _constant(p, t, "plcc"):
        return float("nan")
    if logistic:
        try:
            mapped = logistic4(p, *logistic4_fit(p, t))
        except RuntimeError as exc:
            warnings.warn(f"plcc: {exc}; falling back to linear PLCC", RuntimeWarning, stacklevel=2)
        else:
            if np.ptp(mapped) > 0:
                return float(stats.pearsonr(mapped, t)[0])
            warnings.warn("plcc: logistic fit is flat; falling back to linear PLCC",
                          RuntimeWarning, stacklevel=2)
    return float(stats.pearsonr(p, t)[0])


def evaluate(pred: Any, target: Any) -> dict[str, float]:
    """All metrics of ``METRICS`` for one prediction set."""
    return {
        "srcc": srcc(pred, target),
        "plcc": plcc(pred, target),
        "plcc_logistic": plcc(pred, target, logistic=True),
        "krcc": krcc(pred, target),
        "rmse": rmse(pred, target),
    }


def summarize(results: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, median and sample std (ddof=1) of each metric over several runs (e.g. splits).

    NaN entries are left out with a warning; ``count`` says how many values were used.
    """
    if not results:
        raise ValueError("summarize: no results")
    keys = list(dict.fromkeys(k for r in results for k in r))
    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([r.get(key, np.nan) for r in results], dtype=np.float64)
        valid = values[~np.isnan(values)]
        if valid.size < values.size:
            warnings.warn(f"summarize: {values.size - valid.size} of {values.size} {key!r} values "
                          "are missing or nan and were left out", RuntimeWarning, stacklevel=2)
        summary[key] = {
            "mean": float(np.mean(valid)) if valid.size else float("nan"),
            "median": float(np.median(valid)) if valid.size else float("nan"),
            "std": float(np.std(valid, ddof=1)) if valid.size > 1 else float("nan"),
            "count": int(valid.size),
        }
    return summary
