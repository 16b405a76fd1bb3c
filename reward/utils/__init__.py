"""Small helpers shared by every layer: atomic writes, strict JSON, precision names."""
from .files import atomic_write, jsonable, write_json
from .precision import PRECISIONS, autocast, precision_dtype

__all__ = ["PRECISIONS", "atomic_write", "autocast", "jsonable", "precision_dtype", "write_json"]
