"""The record type every loader returns: samples with named scores, a torch Dataset over them."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..scoring import load_image
from ..utils import check_range
from .splits import BY_CHOICES

SCORE_NAMES = ("quality", "correspondence", "authenticity")
ON_ERROR_CHOICES = ("raise", "skip")

PathLike = str | Path


@dataclass(frozen=True)
class QualitySample:
    """One annotated image: its file, its generation prompt and its scores.

    ``group`` identifies images that must stay on the same side of a
    prompt-grouped split; ``None`` means "group by prompt text". ``key`` is the
    image's identifier in the annotation file (what split files list); ``None``
    means the image's file name.
    """

    image: Path
    prompt: str
    scores: dict[str, float]
    group: str | None = None
    key: str | None = None


class QualityDataset(torch.utils.data.Dataset):
    """A list of :class:`QualitySample` exposed as a torch dataset.

    Items are dicts ``{"image": (3, H, W) float tensor in [0, 1], "prompt": str,
    "scores": {name: 0-d float tensor}, "index": int}``. Images keep their
    size; batch them with :func:`collate`.
    ``skipped`` lists the annotation rows dropped while loading.

    ``label_ranges`` declares each score's native range, the units the data set
    publishes (AGIQA-3K: 0-5); training maps it onto each head's range and
    reports in these units. Scores it does not declare get the span of their
    labels. ``split_by`` is how the field splits this data set (``"prompt"``:
    each group on one side; ``"image"``).
    """

    def __init__(
        self,
        samples: Sequence[QualitySample],
        name: str,
        outputs: Sequence[str],
        skipped: Sequence[str] = (),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        label_ranges: Mapping[str, Sequence[float]] | None = None,
        split_by: str = "image",
    ) -> None:
        self.samples = list(samples)
        self.name = name
        self.outputs = tuple(outputs)
        self.skipped = list(skipped)
        self.transform = transform
        if not self.outputs:
            raise ValueError(f"dataset {name!r}: outputs must name at least one score")
        if split_by not in BY_CHOICES:
            raise ValueError(f"dataset {name!r}: split_by={split_by!r}; expected one of {BY_CHOICES}")
        self.split_by = split_by
        for i, sample in enumerate(self.samples):
            missing = [o for o in self.outputs if o not in sample.scores]
            if missing:
                raise ValueError(
                    f"dataset {name!r}: sample {i} ({sample.image}) lacks score(s) {missing}; "
                    f"expected {list(self.outputs)}, found {sorted(sample.scores)}"
                )
        declared = dict(label_ranges or {})
        self.label_ranges = {o: check_range(declared[o], f"dataset {name!r}: label range of {o!r}")
                             if o in declared else self._span(o) for o in self.outputs}

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"QualityDataset(name={self.name!r}, n={len(self)}, outputs={self.outputs})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            image = load_image(sample.image)
        except ValueError as error:
            raise ValueError(f"dataset {self.name!r} sample {index}: {error}") from error
        if self.transform is not None:
            image = self.transform(image)
        scores = {o: torch.tensor(sample.scores[o], dtype=torch.float32) for o in self.outputs}
        return {"image": image, "prompt": sample.prompt, "scores": scores, "index": int(index)}


    def subset(self, indices: Iterable[int]) -> QualityDataset:
        """A new dataset holding the samples at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise IndexError(
                f"dataset {self.name!r}: subset indices out of range 0..{len(self) - 1}: {bad[:10]}"
            )
        return QualityDataset([self.samples[i] for i in idx], self.name, self.outputs, transform=self.transform,
                              label_ranges=self.label_ranges, split_by=self.split_by)

    def score_array(self, name: str) -> np.ndarray:
        """The scores named ``name`` of all samples as a float64 array."""
        if name not in self.outputs:
            raise ValueError(
                f"dataset {self.name!r} has no score {name!r}; it has {list(self.outputs)}"
            )
        return np.array([s.scores[name] for s in self.samples], dtype=np.float64)

    def groups(self) -> list[str]:
        """Group id per sample (the sample's ``group``, else its prompt text)."""
        return [s.group if s.group is not None else s.prompt for s in self.samples]

    def keys(self) -> list[str]:
        """Each sample's identifier in the annotation file (its ``key``, else its image file name)."""
        return [s.key if s.key is not None else s.image.name for s in self.samples]

    def _span(self, name: str) -> tuple[float, float]:
        """Undeclared units: the labels' own span (a constant label gets +-0.5 around it)."""
        labels = self.score_array(name)
        if not labels.size:
            return (0.0, 1.0)
        low, high = float(labels.min()), float(labels.max())
        return (low, high) if high > low else (low - 0.5, high + 0.5)


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dataset items whose images differ in size.

    Returns ``{"images": list of (3, H, W) tensors, "prompts": list[str],
    "scores": {name: (B,) float tensor}, "indices": (B,) long tensor}``.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    names = list(batch[0]["scores"])
    return {
        "images": [item["image"] for item in batch],
        "prompts": [item["prompt"] for item in batch],
        "scores": {n: torch.stack([item["scores"][n] for item in batch]) for n in names},
        "indices": torch.tensor([item["index"] for item in batch], dtype=torch.long),
    }


