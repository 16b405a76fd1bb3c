"""Small helpers shared by every layer: atomic writes, strict JSON, precision names, progress bars."""
from .files import atomic_write, jsonable, write_json
from .precision import PRECISIONS, autocast, precision_dtype
from .progress import LineProgress, nested_bar_kwargs, progress_bar

__all__ = ["PRECISIONS", "LineProgress", "atomic_write", "autocast", "jsonable", "nested_bar_kwargs",
           "precision_dtype", "progress_bar", "write_json"]
