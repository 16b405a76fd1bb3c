"""Small helpers shared by every layer: atomic writes, strict JSON, precision names, range maps."""
from .files import atomic_write, jsonable, write_json
from .precision import PRECISIONS, autocast, precision_dtype
from .scales import check_range, rescale

__all__ = ["PRECISIONS", "atomic_write", "autocast", "check_range", "jsonable", "precision_dtype", "rescale",
           "write_json"]
