"""The data-set kinds, as data: one table from kind name to its loader and the column layout of its annotation
rows. ``load_dataset``, the CLI's ``--dataset`` choices and the published-split files read it, so a kind added
with :func:`register_dataset_kind` works everywhere at once."""
from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field

from .aigciqa2023 import load_aigciqa2023
from .base import QualityDataset
from .loaders import load_agiqa1k, load_agiqa3k, load_aigiqa20k, load_csv
from .synthetic import load_synthetic_dataset

__all__ = ["DATASET_KINDS", "LOADERS", "DatasetKind", "Layout", "kind_key", "register_dataset_kind"]

Loader = Callable[..., QualityDataset]


@dataclass(frozen=True)
class Layout:
    """How a data set's annotation rows are written: columns in order, which form the key, which hold scores."""

    columns: tuple[str, ...]
    key: tuple[str, ...]
    scores: dict[str, str] = field(default_factory=dict)
    prompt: str = "prompt"
    header: bool = True


@dataclass(frozen=True)
class DatasetKind:
    """A data-set kind: ``loader(path, **kwargs)`` and, when its annotation rows have a fixed layout, ``layout``
    (published split files are written in it; without one they get ``image, prompt, <outputs>``)."""

    loader: Loader
    layout: Layout | None = None


DATASET_KINDS: dict[str, DatasetKind] = {
    "agiqa1k": DatasetKind(load_agiqa1k, Layout(("Image", "Prompt", "MOS"), ("Image",), {"quality": "MOS"},
                                                "Prompt")),
    "agiqa3k": DatasetKind(load_agiqa3k, Layout(("name", "prompt", "mos_quality", "mos_align"), ("name",),
                                                {"quality": "mos_quality", "correspondence": "mos_align"})),
    "aigciqa2023": DatasetKind(load_aigciqa2023, Layout(
        ("model", "image_name", "mosz1", "mosz2", "mosz3", "prompt"), ("model", "image_name"),
        {"quality": "mosz1", "authenticity": "mosz2", "correspondence": "mosz3"})),
    "aigiqa20k": DatasetKind(load_aigiqa20k, Layout(("name", "prompt", "mos"), ("name",), {"quality": "mos"},
                                                    header=False)),
    "csv": DatasetKind(load_csv),
    "synthetic": DatasetKind(load_synthetic_dataset),
}


def kind_key(kind: str) -> str:
    """``"AGIQA-3K"`` -> ``"agiqa3k"``: case, dashes and underscores do not matter."""
    return kind.strip().lower().replace("-", "").replace("_", "")


def register_dataset_kind(name: str, loader: Loader, layout: Layout | None = None) -> DatasetKind:
    """Add a data-set kind (``load_dataset(name, path)``, ``--dataset name``); returns its entry.

    ``loader(path, **kwargs)`` returns a :class:`QualityDataset` named ``name``.
    A name already taken raises ``ValueError``.
    """
    key = kind_key(name)
    if not key or key in DATASET_KINDS:
        raise ValueError(f"dataset kind {name!r} is {'taken' if key else 'empty'}; the kinds are "
                         f"{sorted(DATASET_KINDS)}")
    DATASET_KINDS[key] = entry = DatasetKind(loader, layout)
    return entry


class _Loaders(MutableMapping):
    """``LOADERS[kind]`` is the kind's loader; assigning one registers a kind without a layout."""

    def __getitem__(self, kind: str) -> Loader:
        return DATASET_KINDS[kind].loader

    def __setitem__(self, kind: str, loader: Loader) -> None:
        DATASET_KINDS[kind_key(kind)] = DatasetKind(loader)

    def __delitem__(self, kind: str) -> None:
        del DATASET_KINDS[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(DATASET_KINDS)

    def __len__(self) -> int:
        return len(DATASET_KINDS)


LOADERS = _Loaders()
