"""What a run records: its log (one record per optimizer step, written as JSON and a PNG reward curve) and the
experiment trackers through accelerate (TensorBoard, W&B, ...: scalars and sample grids, main process only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["TrainingLog", "check_trackers_installed", "finish_trackers", "gathered_statistics", "log_grid",
           "start_trackers", "tracker_names"]


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


def gathered_statistics(accelerator: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One step's statistics over every process: per-image values (rewards, shape (B,)) give their mean and
    ``<name>_std`` over every image; per-batch values (loss, penalty) their mean. Collective."""
    import torch

    out = {}
    for key, first in batches[0].items():
        values = accelerator.gather(torch.cat([b[key].detach().float().reshape(-1) for b in batches]))
        out[key] = values.mean().item()
        if first.ndim:
            out[f"{key}_std"] = values.std(correction=0).item()
    return out


class TrainingLog:
    """Per-step records (``step``, ``reward``, ``loss``, ...), the run's configuration and what it ran on
    (``environment``: process count, device type, precision)."""

    def __init__(self, config: Mapping[str, Any] | None = None, environment: Mapping[str, Any] | None = None):
        self.config = dict(config or {})
        self.environment = dict(environment or {})
        self.history: list[dict[str, float]] = []

    def append(self, record: Mapping[str, float]) -> None:
        self.history.append(dict(record))

    def rewards(self) -> list[float]:
        return [r["reward"] for r in self.history]

    def smoothed_rewards(self, decay: float = 0.9) -> list[float]:
        """Exponential moving average of the per-step rewards (what the progress bar shows)."""
        rewards = self.rewards()
        running, smoothed = rewards[0] if rewards else 0.0, []
        for value in rewards:
            running = decay * running + (1 - decay) * value
            smoothed.append(running)
        return smoothed

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``log.json`` and ``reward_curve.png`` into ``directory``."""
        from mst_clipiqa.reward.utils import write_json  # numpy: not for the command line's torch-free configs

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        log_path = write_json(directory / "log.json", {"config": self.config, "environment": self.environment,
                                                         "history": self.history})
        return log_path, self.plot(directory / "reward_curve.png")

    def plot(self, path: str | Path) -> Path:
        from matplotlib.figure import Figure  # not pyplot: no backend to choose, no global state

        steps = [r["step"] for r in self.history]
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.plot(steps, self.rewards(), alpha=0.4, label="reward (batch mean)")
        ax.plot(steps, self.smoothed_rewards(), label="running mean (EMA 0.9)")
        if any(r.get("penalty", 0.0) for r in self.history):
            ax.plot(steps, [r["penalty"] for r in self.history], label="base-model penalty")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("reward")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return Path(path)
