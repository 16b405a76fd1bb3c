"""Rows measured over several seeds: interleaved by seed, timed in CPU and wall seconds, summarised across seeds.

A learning claim holds over seeds, not over the samples of one run: each row runs once per seed, the error bar
is the standard error of the per-seed results (a paired held-out comparison within a seed stays, but only gives
each seed's number). Rows run round-robin by seed (every row for one seed, in a seeded shuffled order, before
any row for the next), so a change in the machine's load spreads over all rows instead of landing on one.
"""
from __future__ import annotations

import random
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["cpu_seconds", "run_interleaved", "mean_se", "across_seeds", "fmt_mean_se"]


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have finished."""
    own = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


def run_interleaved(rows: Mapping[str, Callable[[int], Mapping]], seeds: Sequence[int], *, order_seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """Run ``rows[name](seed)`` for every row and seed, round-robin by seed, and return each row's results in seed
    order: the dict the row returned plus ``seed``, ``cpu_s`` and ``wall_s`` of the call (a row that starts a
    worker process is charged the worker's CPU time once it has been waited for)."""
    if not seeds:
        raise ValueError("seeds is empty; a claim over seeds needs at least one (3 or more for an error bar)")
    names, shuffle = list(rows), random.Random(order_seed)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:
        for name in shuffle.sample(names, len(names)):
            cpu, wall = cpu_seconds(), time.perf_counter()
            out = dict(rows[name](seed))
            out.update(seed=seed, cpu_s=cpu_seconds() - cpu, wall_s=time.perf_counter() - wall)
            results[name].append(out)
            if progress is not None:
                progress(f"seed {seed}: {name} ({out['wall_s']:.0f} s)")
    return results


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); NaN error with one value."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_se needs at least one value")
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return statistics.fmean(xs), se


def across_seeds(runs: Sequence[Mapping], key: str | Callable[[Mapping], float]) -> tuple[float, float]:
    """Mean and standard error across seeds of ``key`` (a result field, or a function of one seed's result)."""
    get = key if callable(key) else (lambda run: run[key])
    return mean_se(get(run) for run in runs)


def fmt_mean_se(mean: float, se: float, digits: int = 3) -> str:
    """``mean +- se`` in ``digits`` significant digits, plus the ratio ``(t = mean / se)``."""
    t = f" (t = {mean / se:.1f})" if se == se and se > 0 else ""
    return f"{mean:.{digits}g} +- {se:.{2 if digits > 1 else 1}g}{t}"
