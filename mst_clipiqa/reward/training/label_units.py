"""Labels in a data set's own units, scores on each head's range: the affine map between them.

Training fits ``rescale(label, dataset.label_ranges[o], score_ranges[o])``: a
template head (scores in [1, 5]) can then reach AGIQA-3K labels of 0-1, and a
prompt head trained on AIGCIQA2023 (0-100) scores on the same 0-5 scale as one
trained on AGIQA-3K. Predictions go back through the inverse map, so metrics
(RMSE) and stored predictions are in the data set's units; rank and linear
correlations do not change.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..datasets import QualityDataset
from ..model import MSTCLIPIQA
from ..utils import rescale


def head_labels(model: MSTCLIPIQA, dataset: QualityDataset, output: str) -> np.ndarray:
    """The labels of ``output`` on its head's score range (what the loss compares scores with)."""
    return rescale(dataset.score_array(output), dataset.label_ranges[output], model.config.score_ranges[output])


def to_label_units(model: MSTCLIPIQA, dataset: QualityDataset, output: str, scores: np.ndarray) -> np.ndarray:
    """Head scores of ``output`` in the data set's label units."""
    return rescale(scores, model.config.score_ranges[output], dataset.label_ranges[output])


def adopt_label_ranges(model: MSTCLIPIQA, dataset: QualityDataset, outputs: Sequence[str]) -> None:
    """Record the data set's label ranges in the model's config (saved with it), and warn about labels
    outside them: a declared range that labels leave is a wrong declaration."""
    for output in outputs:
        low, high = dataset.label_ranges[output]
        labels = dataset.score_array(output)
        outside = int(np.sum((labels < low) | (labels > high)))
        if outside:
            warnings.warn(f"{outside} of {len(labels)} {output!r} labels of {dataset.name!r} lie outside its declared "
                          f"label range [{low:g}, {high:g}] (labels span [{labels.min():.4g}, {labels.max():.4g}]); "
                          "declare the range the labels are on (label_range=)", stacklevel=3)
        model.config.label_ranges[output] = (low, high)
