"""Reward before and after fine-tuning on fixed held-out prompts and seeds: what ``finetune`` and the demo report.

The same images (prompt, seed) are sampled before and after, so the change is a paired difference, not two
noisy training steps. Seeds start at 10,000, far from the seeds training draws its noise from.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

HELD_OUT_SEED = 10_000


@dataclass
class HeldOut:
    """Mean reward on ``len(prompts)`` fixed (prompt, seed) pairs before and after training, with standard
    errors; ``change`` is the mean paired difference."""

    prompts: list[str]
    seeds: list[int]
    before: list[float]
    after: list[float]

    @property
    def mean_before(self) -> float:
        return sum(self.before) / len(self.before)

    @property
    def mean_after(self) -> float:
        return sum(self.after) / len(self.after)

    @property
    def change(self) -> float:
        return self.mean_after - self.mean_before

    @property
    def change_stderr(self) -> float:
        diffs = [a - b for a, b in zip(self.after, self.before)]
        if len(diffs) < 2:
            return float("nan")
        mean = sum(diffs) / len(diffs)
        return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))

    def summary(self) -> str:
        """One line: the means before and after, and the paired change with its standard error."""
        distinct = len(set(self.prompts))
        return (f"held-out reward on {len(self.seeds)} images ({distinct} prompt(s), seeds {self.seeds[0]}-"
                f"{self.seeds[-1]}, the same before and after): {self.mean_before:.4f} -> {self.mean_after:.4f}, "
                f"change {self.change:+.4f} +- {self.change_stderr:.4f} (paired, standard error)")

    def to_dict(self) -> dict:
        return {**asdict(self), "mean_before": self.mean_before, "mean_after": self.mean_after,
                "change": self.change, "change_stderr": self.change_stderr}


def held_out_pairs(prompts: Sequence[str], n_images: int) -> tuple[list[str], list[int]]:
    """``n_images`` (prompt, seed) pairs cycling through ``prompts``, each with its own held-out seed."""
    if n_images < 1:
        raise ValueError(f"held-out images must be >= 1, got {n_images}")
    chosen = [prompts[i % len(prompts)] for i in range(n_images)]
    return chosen, [HELD_OUT_SEED + i for i in range(n_images)]


def before_and_after(evaluate: Callable[[list[str], list[int]], Sequence[float]], train: Callable[[], object],
                     prompts: Sequence[str], n_images: int) -> HeldOut:
    """``evaluate(prompts, seeds)`` per image, then ``train()``, then ``evaluate`` again on the same pairs."""
    chosen, seeds = held_out_pairs(prompts, n_images)
    before = [float(v) for v in evaluate(chosen, seeds)]
    train()
    after = [float(v) for v in evaluate(chosen, seeds)]
    return HeldOut(chosen, seeds, before, after)
