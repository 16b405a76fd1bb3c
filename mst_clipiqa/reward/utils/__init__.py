"""Small helpers shared by every layer: atomic writes, strict JSON, the safetensors reader, precision names,
progress bars, range maps, NaN / inf checks of named tensors and the rollback of a failed adapter load. The run
plumbing both trainers share (processes, the run folder and its lock, checkpoints, generator and optimizer state,
stop signals) is :mod:`mst_clipiqa.runtime`."""
from typing import TYPE_CHECKING

from .lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .adapter_rollback import adapter_rollback
    from .files import atomic_write, jsonable, read_json, read_tensors, save_tensors, write_json
    from .finite import check_finite_tensors, nonfinite_names
    from .options import option
    from .precision import PRECISIONS, autocast, no_autocast, precision_dtype
    from .progress import LineProgress, nested_bar_kwargs, progress_bar
    from .scales import UNIT, check_range, rescale

__all__ = ["PRECISIONS", "UNIT", "LineProgress", "adapter_rollback", "atomic_write", "autocast", "check_finite_tensors",
           "check_range", "jsonable", "nested_bar_kwargs", "no_autocast", "nonfinite_names", "option",
           "precision_dtype", "progress_bar", "read_json", "read_tensors", "rescale", "save_tensors", "write_json"]

load_lazily(__name__)
