#!/usr/bin/env python
"""How long the command line takes to answer ``--help``: ``mst-clipiqa --help`` and every command's ``--help``.

    python benchmarks/bench_cli_startup.py [--repeats 5]

Each case runs in a fresh interpreter, ``--repeats`` times, interleaved (one round runs every case once) with
two references: an empty interpreter (``python -c pass``) and ``import torch`` (what a ``--help`` whose flags
came from a module importing torch used to cost). Reports the median wall time and the median CPU time (user +
system of the child process) in seconds, each case's ratio to ``import torch`` measured in the same run, and
the load average, since a shared machine's load stretches every wall-clock figure.
Target: every ``--help`` under 1 s median.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_S = 1.0


def cases() -> dict[str, list[str]]:
    from mst_clipiqa.cli import COMMANDS  # light: the commands import their libraries where they run

    return {"python -c pass": ["-c", "pass"], "import torch": ["-c", "import torch"],
            "mst-clipiqa --help": ["-m", "mst_clipiqa", "--help"],
            **{f"mst-clipiqa {c} --help": ["-m", "mst_clipiqa", c, "--help"] for c in COMMANDS}}


def run_once(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one fresh interpreter running ``args``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args, _ = parser.parse_known_args(argv)  # run_all.py passes every benchmark the same flags
    load_before = os.getloadavg()
    runs = cases()
    for case in runs.values():  # warm-up: the file system cache
        run_once(case)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, case in runs.items():
            times[name].append(run_once(case))
    load_after = os.getloadavg()
    results = {n: {"median_wall_s": statistics.median(w for w, _ in t),
                   "median_cpu_s": statistics.median(c for _, c in t)} for n, t in times.items()}
    torch_wall = results["import torch"]["median_wall_s"]
    print(f"CLI start-up, {args.repeats} interleaved runs each, load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after, {os.cpu_count()} CPUs")
    print(f"{'case':<30}{'wall s':>8}{'CPU s':>8}{'/ import torch':>16}")
    for name, r in results.items():
        print(f"{name:<30}{r['median_wall_s']:>8.2f}{r['median_cpu_s']:>8.2f}{r['median_wall_s'] / torch_wall:>16.2f}")
    slow = [n for n in results if n.startswith("mst-clipiqa") and results[n]["median_wall_s"] >= TARGET_S]
    print(f"every --help under {TARGET_S:.0f} s median: " + ("yes" if not slow else f"no ({', '.join(slow)})"))
    return results


if __name__ == "__main__":
    main()
