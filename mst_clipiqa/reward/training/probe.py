"""A linear probe: closed-form ridge regression on the frozen encoder features, the floor a trained head should reach.

Features are the two stream embeddings ``[f_coarse, f_fine]``, plus the mean of
the prompt's token states for outputs with a prompt head (the head sees the
prompt too). Each is standardised on the training part; the ridge penalty is
chosen by exact leave-one-out error on the training part (no validation or
test data is used), from a grid relative to the largest squared singular value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..datasets import QualityDataset, Split
from .features import CachedFeatures
from .metrics import evaluate

ALPHAS = np.logspace(-6, 1, 15)  # times the largest squared singular value of the training features


@dataclass
class RidgeProbe:
    """A fitted ridge regression: ``predict(x) = ((x - mean) / scale) @ weights + bias``."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS) -> RidgeProbe:
    """Ridge regression of ``y`` on ``x`` (with intercept); the penalty minimises the leave-one-out error."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"a ridge probe needs at least 3 training samples, got {len(x)}")
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    z, y_mean = (x - mean) / scale, y.mean()
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ (y - y_mean)
    best = None
    for alpha in np.asarray(alphas) * s[0] ** 2:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink * uty) + y_mean
        leverage = (u**2) @ shrink + 1.0 / len(y)  # the intercept adds 1/n
        loo = np.mean(((y - fitted) / np.maximum(1.0 - leverage, 1e-12)) ** 2)
        if best is None or loo < best[0]:
            best = (loo, alpha, vt.T @ (s / (s**2 + alpha) * uty))
    _, alpha, weights = best
    return RidgeProbe(mean, scale, weights, float(y_mean), float(alpha / s[0] ** 2))


def probe_features(features: CachedFeatures, with_prompt: bool) -> np.ndarray:
    """(N, D) probe inputs: stream embeddings, and the prompt's mean token state when ``with_prompt``."""
    parts = [features.f_coarse.float().cpu(), features.f_fine.float().cpu()]
    if with_prompt and features.prompt_states is not None:
        pooled = torch.stack([s.float().mean(0).cpu() for s in features.prompt_states])
        parts.append(pooled[features.prompt_index.cpu()])
    return torch.cat(parts, dim=1).numpy().astype(np.float64)


def linear_probe(features: CachedFeatures, dataset: QualityDataset, split: Split, outputs: Sequence[str],
                 prompt_outputs: Sequence[str] = ()) -> dict[str, dict]:
    """Per output: test metrics (in the data set's units) of a ridge fitted on the split's train part,
    and its chosen relative penalty ``alpha``."""
    inputs = {flag: probe_features(features, flag) for flag in {o in prompt_outputs for o in outputs}}
    result = {}
    for output in outputs:
        x, y = inputs[output in prompt_outputs], dataset.score_array(output)
        probe = fit_ridge(x[split.train], y[split.train])
        result[output] = {"test": evaluate(probe.predict(x[split.test]), y[split.test]), "alpha": probe.alpha}
    return result
