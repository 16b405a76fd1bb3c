"""Early stopping on an independent scorer: the best value so far, and how many evaluations ago it came."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MonitorPatience"]


@dataclass
class MonitorPatience:
    """The patience rule of ``optimize_noise(monitor=, patience=)`` and :class:`HackingMonitor`: evaluation
    ``index`` improves when its value beats every earlier one (NaN never does); the patience is
    exhausted when ``patience`` evaluations have passed since the best."""

    patience: int
    best: float = -math.inf
    best_at: int = 0
    last: int = 0

    def update(self, index: int, value: float) -> bool:
        """Record evaluation ``index``; True when it is the new best."""
        self.last = index
        if value > self.best:
            self.best, self.best_at = float(value), index
            return True
        return False

    @property
    def exhausted(self) -> bool:
        return self.last - self.best_at >= self.patience
