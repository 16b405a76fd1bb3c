"""Calibrated mixing of several rewards: each mapped through its own running quantiles before they are weighted."""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import torch

from .advantages import gather_rows


class QuantileMixer:
    """Each named reward becomes its quantile among that reward's last ``buffer_size`` values (every process's,
    this batch's included): ``(#{v < r} + #{v == r} / 2) / n`` in [0, 1]. Rewards on different scales then mix
    by rank, so a weight means the same for each, and one reward's outliers cannot swamp another. Every process
    sees the same gathered values, so the buffers stay identical (save ``state_dict`` from any one)."""

    def __init__(self, buffer_size: int = 512):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.buffer_size = buffer_size
        self.buffers: dict[str, deque] = {}

    def __call__(self, named: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """(B,) the weighted sum of each reward's quantile (every weight 1 when ``weights`` is None)."""
        weights = {name: 1.0 for name in named} if weights is None else dict(weights)
        unknown = sorted(set(weights) - set(named))
        if unknown:
            raise ValueError(f"reward weights name {unknown}, but the rewards are {sorted(named)}")
        return sum(w * self.quantiles(name, named[name]) for name, w in weights.items())

    def quantiles(self, name: str, rewards: torch.Tensor) -> torch.Tensor:
        values = rewards.detach().double().flatten()
        every, _ = gather_rows(values)
        buffer = self.buffers.setdefault(name, deque(maxlen=self.buffer_size))
        buffer.extend(v for v in every.tolist() if v == v)  # NaN stays out; its own quantile stays NaN
        reference = torch.tensor(list(buffer), dtype=torch.float64, device=values.device)
        below = (reference[None] < values[:, None]).sum(1)
        ties = (reference[None] == values[:, None]).sum(1)
        quantile = (below + ties / 2) / max(len(reference), 1)
        return torch.where(torch.isfinite(values), quantile, values).float().to(rewards.device)

    def state_dict(self) -> dict[str, list[float]]:
        return {name: list(buffer) for name, buffer in self.buffers.items()}

    def load_state_dict(self, state: Mapping[str, list[float]]) -> None:
        self.buffers = {name: deque(values, maxlen=self.buffer_size) for name, values in state.items()}
