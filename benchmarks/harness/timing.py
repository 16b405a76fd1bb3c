"""Wall-clock timing: device sync, one timed call, interleaved rounds and a matmul rate reference."""
from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` to ``dtype``; a null context for fp32 or no dtype."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall seconds of one call of ``fn``, with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_interleaved(fns: dict[str, Callable], device: torch.device, warmup: int,
                     repeats: int) -> dict[str, list[float]]:
    """Interleaved timing, in a new (seeded) order every round; returns the wall seconds of every call per name.

    Not a rotation: that keeps the cyclic order, so a function always runs right after the same other one.
    On an H100 the two that always followed the bf16 matmul reference timed up to 9 % slower than the same
    code placed elsewhere (clocks lowered after it, most likely)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            times[name].append(timed(fns[name], device))
    return times


def med(xs: list[float]) -> float:
    """The median."""
    return statistics.median(xs)


class MatmulStep:
    """``inner`` back-to-back n x n matmuls per call, so that one call lasts long enough to time."""

    def __init__(self, n: int, device: torch.device, dtype: torch.dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device, dtype)
        self.b = torch.randn(n, n, generator=g).to(device, dtype)
        self.c = torch.empty(n, n, device=device, dtype=dtype)
        self.n, self.inner, self.device = n, 1, device

    def __call__(self) -> torch.Tensor:
        for _ in range(self.inner):
            torch.matmul(self.a, self.b, out=self.c)
        return self.c

    def calibrate(self, seconds: float) -> None:
        """Set ``inner`` so that one call lasts about ``seconds``."""
        self()  # warm-up
        self.inner = max(1, math.ceil(seconds / max(timed(self, self.device), 1e-6)))

    @property
    def flops(self) -> int:
        return 2 * self.n ** 3 * self.inner
