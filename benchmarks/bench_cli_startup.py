#!/usr/bin/env python
"""How long the command line takes to answer ``--help``: ``mst-clipiqa --help`` and ``mst-clipiqa score --help``.

    python benchmarks/bench_cli_startup.py [--repeats 5]

Each command runs in a fresh interpreter, ``--repeats`` times, interleaved with
two references: an empty interpreter (``python -c pass``) and ``import torch``
(what every ``--help`` cost before the commands imported their libraries
lazily), and ``train --help``, whose flags come from ``TrainConfig`` and so
still import torch (as do ``finetune``'s). Reports the median and the fastest run in seconds, and the load
average, since a shared machine's load stretches every figure.
Target: ``--help`` and ``score --help`` under 1 s on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0
CASES = {"python -c pass": ["-c", "pass"], "import torch": ["-c", "import torch"],
         "mst-clipiqa --help": ["-m", "mst_clipiqa", "--help"],
         "mst-clipiqa score --help": ["-m", "mst_clipiqa", "score", "--help"],
         # its flags come from TrainConfig, whose package imports torch: the one slow help, measured to show it
         "mst-clipiqa train --help": ["-m", "mst_clipiqa", "train", "--help"]}


def run_once(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args, _ = parser.parse_known_args(argv)  # run_all.py passes every benchmark the same flags
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for case in CASES.values():  # warm-up: the file system cache
        run_once(case)
    for _ in range(args.repeats):
        for name, case in CASES.items():
            times[name].append(run_once(case))
    load_after = os.getloadavg()
    results = {n: {"median_s": statistics.median(t), "min_s": min(t)} for n, t in times.items()}
    print(f"CLI start-up, {args.repeats} runs each, load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after, {os.cpu_count()} CPUs")
    print(f"{'command':<28}{'median s':>10}{'min s':>8}")
    for name, r in results.items():
        print(f"{name:<28}{r['median_s']:>10.2f}{r['min_s']:>8.2f}")
    for name in ("mst-clipiqa --help", "mst-clipiqa score --help"):
        verdict = "meets" if results[name]["min_s"] < TARGET_S else "misses"
        print(f"{name}: fastest {results[name]['min_s']:.2f} s {verdict} the {TARGET_S:.0f} s target")
    return results


if __name__ == "__main__":
    main()
