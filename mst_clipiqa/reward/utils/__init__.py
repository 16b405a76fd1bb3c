"""Small helpers shared by every layer: atomic writes, strict JSON, the safetensors reader, precision names,
progress bars, range maps, NaN / inf checks of named tensors, stopping at a safe point on SIGTERM / SIGINT, and
the rollback of a failed adapter load. Run plumbing shared by the trainers (processes, run-folder lock, generator
and optimizer state) sits in :mod:`reward.utils.processes`, :mod:`reward.utils.runs` and :mod:`reward.utils.state`,
imported from there (they load accelerate, which scoring never needs)."""
from typing import TYPE_CHECKING

from .lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .adapter_rollback import adapter_rollback
    from .files import atomic_write, jsonable, read_json, read_tensors, save_tensors, write_json
    from .finite import check_finite_tensors, nonfinite_names
    from .options import option
    from .precision import PRECISIONS, autocast, precision_dtype
    from .preemption import Preempted, StopSignals
    from .progress import LineProgress, nested_bar_kwargs, progress_bar
    from .scales import UNIT, check_range, rescale

__all__ = ["PRECISIONS", "UNIT", "LineProgress", "adapter_rollback", "atomic_write", "autocast", "check_finite_tensors",
           "check_range", "jsonable", "nested_bar_kwargs", "nonfinite_names", "option", "Preempted", "precision_dtype",
           "progress_bar", "read_json", "read_tensors", "rescale", "save_tensors", "StopSignals", "write_json"]

load_lazily(__name__)
