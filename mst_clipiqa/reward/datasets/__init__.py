"""Image-quality datasets: a common record type and loaders for the AIGIQA benchmarks.

Every loader returns a :class:`QualityDataset` whose samples carry scores under
the model's output names (``quality``, ``correspondence``, ``authenticity``).
Scores are kept exactly as published (no rescaling), and each loader declares
their units in ``dataset.label_ranges``: AGIQA-1K/3K and AIGIQA-20K MOS on 0-5,
AIGCIQA2023 ``MOSz`` on 0-100 (its flattened CSV: 0-5). Training maps these
ranges onto each head's range and reports in the data set's units.
``dataset.split_by`` is how the field splits it (AGIQA-3K: grouped by prompt).
Images annotated twice are kept once with the mean of their labels (a warning
lists them). Published split files in IPCE's layout read with
:func:`load_split_folder`.

Bad annotation data raises ``ValueError`` naming the file, the place in it
(``line N`` for CSV files, counting the header as line 1; ``row N`` for
spreadsheets, the row number shown by a spreadsheet program, header included)
and what was expected. With ``on_error="skip"`` bad rows are dropped instead,
listed in ``dataset.skipped`` and summarised in one warning. Problems with the
file as a whole (missing file, missing columns, no rows) always raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .aigciqa2023 import load_aigciqa2023
    from .base import SCORE_NAMES, PathLike, QualityDataset, QualitySample, collate
    from .clip_geometry import ClipLikeFeatures, clip_like_features
    from .duplicate_annotations import merge_duplicates
    from .kinds import DATASET_KINDS, LOADERS, DatasetKind, Layout, kind_key, register_dataset_kind
    from .loaders import load_agiqa1k, load_agiqa3k, load_aigiqa20k, load_csv
    from .public_splits import load_split_folder, load_split_source, save_split_folder
    from .reference_split import reference_split
    from .splits import BY_CHOICES, Split, carve_validation, load_splits, make_splits, save_splits
    from .synthetic import load_synthetic_dataset, make_synthetic_dataset


def load_dataset(kind: str, path: PathLike, **kwargs: Any) -> QualityDataset:
    """Load a dataset by kind, a key of ``DATASET_KINDS`` (built in: ``agiqa1k, agiqa3k, aigciqa2023, aigiqa20k,
    csv, synthetic``; ``synthetic`` generates the procedural set in ``path`` when it is not there yet; add one
    with :func:`register_dataset_kind`)."""
    from .kinds import DATASET_KINDS, kind_key

    key = kind_key(kind)
    if key not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(DATASET_KINDS)}")
    return DATASET_KINDS[key].loader(path, **kwargs)


__all__ = ["BY_CHOICES", "DATASET_KINDS", "LOADERS", "SCORE_NAMES", "ClipLikeFeatures", "DatasetKind", "Layout",
           "QualityDataset", "QualitySample", "Split", "carve_validation", "clip_like_features", "collate", "kind_key",
           "load_agiqa1k", "load_agiqa3k", "load_aigciqa2023", "load_aigiqa20k", "load_csv", "load_dataset",
           "load_split_folder", "load_split_source", "load_splits", "load_synthetic_dataset", "make_splits",
           "make_synthetic_dataset", "merge_duplicates", "reference_split", "register_dataset_kind",
           "save_split_folder", "save_splits"]

load_lazily(__name__)
