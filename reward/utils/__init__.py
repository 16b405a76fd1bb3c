"""Small helpers shared by every layer: atomic writes, strict JSON, precision names, progress bars, range maps,
NaN / inf checks of named tensors, and the rollback of a failed adapter load."""
from .adapter_rollback import adapter_rollback
from .files import atomic_write, jsonable, write_json
from .finite import check_finite_tensors, nonfinite_names
from .precision import PRECISIONS, autocast, precision_dtype
from .progress import LineProgress, nested_bar_kwargs, progress_bar
from .scales import check_range, rescale

__all__ = ["PRECISIONS", "LineProgress", "adapter_rollback", "atomic_write", "autocast", "check_finite_tensors",
           "check_range", "jsonable", "nested_bar_kwargs", "nonfinite_names", "precision_dtype", "progress_bar",
           "rescale", "write_json"]
