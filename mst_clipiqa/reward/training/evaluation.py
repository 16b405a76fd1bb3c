"""Scores and metrics of a model on a data set: per split and summarised, or on all of it."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..datasets import QualityDataset, Split
from ..model import MSTCLIPIQA, has_encoder_adapter
from .feature_cache import FeatureCache
from .features import CachedFeatures, encode_features
from .label_units import to_label_units
from .metrics import evaluate, summarize


def resolve_outputs(model: MSTCLIPIQA, dataset: QualityDataset, outputs: Sequence[str] | None) -> tuple[str, ...]:
    """The outputs to train / evaluate: ``outputs``, or every model output the data set scores."""
    if outputs is None:
        outputs = [o for o in model.outputs if o in dataset.outputs]
        if not outputs:
            raise ValueError(f"the model predicts {list(model.outputs)} but data set {dataset.name!r} scores "
                             f"{list(dataset.outputs)}; expected at least one shared output name")
    missing = [o for o in outputs if o not in model.outputs or o not in dataset.outputs]
    if missing or not outputs:
        raise ValueError(f"outputs {missing or list(outputs)} must be predicted by the model {list(model.outputs)} "
                         f"and scored by data set {dataset.name!r} {list(dataset.outputs)}")
    return tuple(outputs)


@torch.no_grad()
def predict_features(model: MSTCLIPIQA, features: CachedFeatures, indices: Sequence[int], outputs: Sequence[str],
                     batch_size: int = 256) -> dict[str, np.ndarray]:
    """Scores of the samples at ``indices`` from their encoder outputs, per output, as float64 arrays."""
    model.eval()
    indices = list(indices)
    parts: dict[str, list[torch.Tensor]] = {o: [] for o in outputs}
    for start in range(0, len(indices), batch_size):
        scores = model.score_features(**features.inputs(indices[start:start + batch_size]))
        for o in outputs:
            parts[o].append(scores[o].float().cpu())
    return {o: torch.cat(p).double().numpy() for o, p in parts.items()}


def dataset_paths_prompts(dataset: QualityDataset, indices: Sequence[int] | None = None) -> tuple[list, list]:
    samples = dataset.samples if indices is None else [dataset.samples[i] for i in indices]
    return [s.image for s in samples], [s.prompt for s in samples]



def evaluate_model(model: MSTCLIPIQA, dataset: QualityDataset, splits: Sequence[Split] | None = None,
                   outputs: Sequence[str] | None = None, cache_dir: str | Path | None = None, use_cache: bool = True,
                   batch_size: int = 32, progress: bool = True, mixed_precision: str = "no",
                   preprocess: str = "tensor") -> dict[str, Any]:
    """Metrics of a model on a data set: on each split's test part with their summary, or on all of it.

    Scores are mapped from each head's range to the data set's label units
    (``dataset.label_ranges``) first, so RMSE is in those units. Images are encoded
    once (through the feature cache unless ``use_cache=False``
    or an adapter changes the encoders), whatever the number of splits. ``mixed_precision``
    is the encoders' autocast precision, part of the cache key: give what ``train`` used to
    reuse the features it cached. ``preprocess="pil"`` resizes and crops the image files
    as the reference's 8-bit PIL path does (exact parity where both encoders take one size).
    """
    outputs = resolve_outputs(model, dataset, outputs)
    needed = sorted({i for s in splits for i in s.test}) if splits else list(range(len(dataset)))
    paths, prompts = dataset_paths_prompts(dataset, needed)
    if use_cache and not has_encoder_adapter(model):
        cache = FeatureCache(cache_dir, model, mixed_precision, batch_size=batch_size, progress=progress,
                             preprocess=preprocess)
        features = cache.features(paths, prompts)
    else:
        features = encode_features(model, paths, prompts, batch_size, precision=mixed_precision, progress=progress,
                                   preprocess=preprocess)
    predictions = predict_features(model, features.to(model.device), range(len(needed)), outputs)
    predictions = {o: to_label_units(model, dataset, o, p) for o, p in predictions.items()}
    position = {index: j for j, index in enumerate(needed)}

    def metrics(indices: Sequence[int]) -> dict[str, dict[str, float]]:
        rows = [position[i] for i in indices]
        return {o: evaluate(predictions[o][rows], dataset.score_array(o)[list(indices)]) for o in outputs}

    if not splits:
        return {"outputs": list(outputs), "n": len(dataset), "all": metrics(needed)}
    per_split = [{"split": k, "n_test": len(s.test), "test": metrics(s.test)} for k, s in enumerate(splits)]
    summary = {o: summarize([r["test"][o] for r in per_split]) for o in outputs}
    return {"outputs": list(outputs), "n": len(dataset), "splits": per_split, "summary": summary}
