"""A best-of-N or reranking result: scored candidates, best first, saved as images, a CSV / JSON table and a
contact sheet."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .grid import contact_sheet, to_pil
from .overlays import overlay_map

__all__ = ["Candidate", "Ranking"]


@dataclass
class Candidate:
    """One scored image: ``seed`` regenerates it (None for reranked files, which have a ``name``).

    ``batch_seeds``: the seeds generated in the same pipeline call. Regenerating
    with them replays the same batch, which is bitwise exact also on GPUs, where
    kernels can differ with the batch size (a lone regeneration differs there
    by ~1e-4; on CPU by ~1e-6).
    """

    rank: int
    score: float
    image: torch.Tensor
    seed: int | None = None
    name: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    batch_seeds: tuple[int, ...] | None = None
    quality_map: torch.Tensor | None = None  # (h, w), with best_of_n(maps=True)


@dataclass
class Ranking:
    """Candidates ranked best first, with the top ``top_k`` as PIL images and a contact sheet (each candidate's
    quality map overlaid when it has one, in ``map_range``)."""

    prompt: str | list[str] | None
    candidates: list[Candidate]
    top_k: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    map_range: tuple[float, float] | None = None

    @property
    def winner(self) -> Candidate:
        return self.candidates[0]

    @property
    def best(self) -> list[Image.Image]:
        return [to_pil(c.image) for c in self.candidates[: self.top_k]]

    @property
    def scores(self) -> torch.Tensor:
        return torch.tensor([c.score for c in self.candidates])

    @property
    def seeds(self) -> list[int | None]:
        return [c.seed for c in self.candidates]

    @cached_property
    def contact_sheet(self) -> Image.Image:
        labels = [f"rank {c.rank}  score {c.score:.3f}\n" + (f"seed {c.seed}" if c.seed is not None else c.name or "")
                  for c in self.candidates]
        return contact_sheet(self.sheet_images(), labels)

    def sheet_images(self) -> list[Image.Image | torch.Tensor]:
        """Each candidate's image, best first, with its quality map overlaid where it has one."""
        return [c.image if c.quality_map is None else overlay_map(c.image, c.quality_map, self.map_range)
                for c in self.candidates]

    def records(self) -> list[dict[str, Any]]:
        """One row per candidate: rank, score (None for NaN), then seed and/or file name, and each named
        score when the reward has several."""
        rows = [{"rank": c.rank, "score": _number(c.score), "seed": c.seed, "name": c.name,
                 **({k: _number(v) for k, v in c.scores.items()} if len(c.scores) > 1 else {})}
                for c in self.candidates]
        for key in ("seed", "name"):
            if all(row[key] is None for row in rows):
                for row in rows:
                    del row[key]
        return rows

    def save(self, directory: str | Path, csv_file: bool = True, json_file: bool = True,
             sheet: bool = True) -> dict[str, Path]:
        """Write the best images, and optionally ``ranking.csv``, ``ranking.json`` and ``contact_sheet.png``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for i, image in enumerate(self.best):
            paths[f"best_{i}"] = directory / f"best_{i}.png"
            image.save(paths[f"best_{i}"])
        rows = self.records()
        if csv_file:
            paths["csv"] = directory / "ranking.csv"
            with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        if json_file:
            paths["json"] = directory / "ranking.json"
            paths["json"].write_text(json.dumps({"prompt": self.prompt, "candidates": rows, "timings": self.timings},
                                                indent=2), encoding="utf-8")
        if sheet:
            paths["contact_sheet"] = directory / "contact_sheet.png"
            self.contact_sheet.save(paths["contact_sheet"])
        return paths


def _number(value: float) -> float | None:
    """NaN as null (JSON has no NaN; a CSV cell is left empty)."""
    return None if math.isnan(value) else value
