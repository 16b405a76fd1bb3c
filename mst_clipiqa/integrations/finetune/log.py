"""A training log: one record per optimizer step, written as JSON and a PNG reward curve."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.reward.utils import write_json

__all__ = ["TrainingLog", "gathered_statistics"]


def gathered_statistics(accelerator: Any, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One step's statistics over every process: per-image values (rewards, shape (B,)) give their mean and
    ``<name>_std`` over every image; per-batch values (loss, penalty) their mean. Collective."""
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
