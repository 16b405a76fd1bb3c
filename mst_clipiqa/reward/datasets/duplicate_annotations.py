"""Images annotated more than once: one sample each, its scores the mean of its rows (stated, with a warning)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .base import QualitySample


def merge_duplicates(name: str, samples: Sequence[QualitySample]) -> list[QualitySample]:
    """One sample per image file, at its first row's place; repeated rows' scores are averaged.

    A split by image could otherwise put copies of one image on both sides, and two
    labels for one image cannot both be fitted. Each merged image is listed in one
    warning with its labels; the first row's prompt, group and key are kept.
    """
    rows: dict[Path, list[QualitySample]] = {}
    for sample in samples:
        rows.setdefault(sample.image, []).append(sample)
    repeated = {image: group for image, group in rows.items() if len(group) > 1}
    if not repeated:
        return list(samples)
    details = [f"{group[0].key or image.name}: " + "; ".join(_labels(group, o) for o in group[0].scores)
               for image, group in repeated.items()]
    warnings.warn(f"{name}: {len(repeated)} image(s) are annotated more than once; each is kept once with the "
                  f"mean of its labels: {' | '.join(details[:10])}" + (" ..." if len(details) > 10 else ""),
                  stacklevel=3)
    return [group[0] if len(group) == 1 else replace(group[0], scores={o: _mean(group, o) for o in group[0].scores})
            for group in rows.values()]


def _labels(group: Sequence[QualitySample], output: str) -> str:
    return f"{output} {', '.join(f'{s.scores[output]:.4g}' for s in group)} -> {_mean(group, output):.4g}"


def _mean(group: Sequence[QualitySample], output: str) -> float:
    return float(np.mean([s.scores[output] for s in group]))
