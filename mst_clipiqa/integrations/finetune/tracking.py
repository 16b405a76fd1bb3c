"""Experiment trackers through accelerate (TensorBoard, W&B, ...): scalars and sample grids, main process only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["tracker_names", "check_trackers_installed", "start_trackers", "log_grid", "finish_trackers"]


def tracker_names(log_with: str | None) -> list[str]:
    """``"tensorboard,wandb"`` -> ``["tensorboard", "wandb"]``; a name accelerate does not know is a ValueError."""
    from accelerate.utils import LoggerType

    names = [name.strip() for name in (log_with or "").split(",") if name.strip()]
    known = {t.value for t in LoggerType}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"log_with names unknown tracker(s) {unknown}; accelerate knows {sorted(known)}")
    return names


def check_trackers_installed(names: list[str]) -> None:
    """accelerate silently skips a tracker whose package is missing; here that is an error."""
    from accelerate.tracking import get_available_trackers

    available = {str(t.value) for t in get_available_trackers()}
    missing = [n for n in names if n != "all" and n not in available]
    if missing:
        raise ValueError(f"log_with={','.join(names)}: the package of {missing} is not installed "
                         f"(e.g. pip install {missing[0].replace('_', '-')})")


def _hparam(value: Any) -> bool | int | float | str:
    # Trackers (TensorBoard's hparams) take only scalars and strings.
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def start_trackers(accelerator: Any, project: str, config: Mapping[str, Any]) -> None:
    """Initialise the accelerator's trackers with the run's settings (no-op without trackers)."""
    if accelerator.log_with:
        accelerator.init_trackers(project, config={k: _hparam(v) for k, v in config.items()})


def log_grid(accelerator: Any, name: str, grid: Image.Image, step: int) -> None:
    """Log one image (a sample grid) to every tracker that takes images."""
    for tracker in accelerator.trackers:
        log_images = getattr(tracker, "log_images", None)
        if log_images is None:
            continue
        if tracker.name == "tensorboard":
            import numpy as np

            log_images({name: np.asarray(grid)[None]}, step=step, dataformats="NHWC")
        else:
            log_images({name: [grid]}, step=step)


def finish_trackers(accelerator: Any) -> None:
    """Close the trackers (flushing their files) but keep the processes together, unlike
    ``accelerator.end_training``, which also ends the process group."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
