"""A run folder of ``mst-clipiqa train`` as ``eval`` reads it: the saved model, the splits, and which images
that model was trained on (the training and validation parts of the split it was chosen from)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mst_clipiqa.reward.datasets import QualityDataset, Split

SPLITS, REPORT, MODEL = "splits.json", "report.json", "model"  # reward.training.run_folder's names


@dataclass(frozen=True)
class TrainingRun:
    """A finished training run: ``folder`` holds ``model/``, ``splits.json`` and ``report.json``; the saved model
    is split ``selected_split``'s."""

    folder: Path
    selected_split: int

    @property
    def model_dir(self) -> Path:
        return self.folder / MODEL

    def splits(self, dataset: QualityDataset) -> list[Split]:
        from mst_clipiqa.reward.datasets import load_splits

        return load_splits(self.folder / SPLITS, n=len(dataset), groups=dataset.groups())

    def trained_on(self, dataset: QualityDataset) -> set[int]:
        """Indices of the images the saved model saw in training (its split's training and validation parts)."""
        split = self.splits(dataset)[self.selected_split]
        return set(split.train) | set(split.val)


def training_run(model: str | Path) -> TrainingRun | None:
    """The run that ``model`` (a run folder, or the ``model/`` folder inside one) came from; None for others."""
    path = Path(model)
    for folder in (path, path.parent):
        if folder == path.parent and path.name != MODEL:
            continue
        if (folder / SPLITS).is_file() and (folder / REPORT).is_file() and (folder / MODEL).is_dir():
            report = json.loads((folder / REPORT).read_text(encoding="utf-8"))
            return TrainingRun(folder, int(report["selected_split"]))
    return None
