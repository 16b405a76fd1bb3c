#!/usr/bin/env python
"""Wall time of ``mst-clipiqa demo --offline`` (``make demo`` without the network), from a fresh process; with
``--fresh-clone DIR``, both phases of ``make demo`` on a fresh clone, as a new user meets them.

    python benchmarks/bench_demo.py [--fast] [--out DIR]
    python benchmarks/bench_demo.py --fresh-clone /tmp/clone    # minutes: a whole install

Runs the demo once in a fresh interpreter into an empty folder (a fresh feature
cache), and reports the wall time, the demo's own time per step (from its
``figures.json``) and the load average before and after. Target: at most 180 s
on an idle 2-core machine.

``--fresh-clone`` clones this repository into DIR (which must not exist), then
times ``make demo`` in two phases: the install (a new ``.venv`` with the library
alone, pip's cache a new empty folder, so every package is fetched; the download
size is read from pip's output) and the run (``make demo`` once the install is
done). It reports wall and CPU time of each phase, the download and ``.venv``
sizes, the load average and the weights the demo used (its ``[weights]`` line),
writes them to DIR/bench_demo.json and each phase's output to DIR/install.log
and DIR/demo.log.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="the test suite's smallest demo")
    parser.add_argument("--out", type=Path, help="keep the demo's folder here (default: a temporary one)")
    parser.add_argument("--fresh-clone", type=Path, help="time both phases of `make demo` in a fresh clone here")
    args, _ = parser.parse_known_args(argv)  # run_all.py passes every benchmark the same flags
    if args.fresh_clone:
        return fresh_clone(args.fresh_clone)
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo_out"
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "mst_clipiqa", "demo", "--offline", "--out", str(folder)] + ["--fast"] * args.fast
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=3600)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    figures = json.loads((folder / "figures.json").read_text())
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in figures["step_seconds"].items())
    print(f"demo{' --fast' if args.fast else ''}: {wall:.1f} s wall ({figures['seconds']:.1f} s in the steps: "
          f"{steps}; the rest is start-up and imports), load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after, {os.cpu_count()} CPUs")
    if not args.fast:
        print(f"{'meets' if wall <= TARGET_S else 'misses'} the {TARGET_S:.0f} s target")
    if args.out is None:
        shutil.rmtree(folder.parent, ignore_errors=True)
    return {"wall_s": wall, "steps": figures["step_seconds"], "load": [load_before[0], load_after[0]]}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Wall and CPU time (this process's children) and load average around one command, its output in ``log``."""
    cpu_before, load_before = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(command, cwd=cwd, env=env, check=True, timeout=7200, stdout=out, stderr=subprocess.STDOUT)
    wall, cpu_after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load": [load_before, os.getloadavg()[0]]}


def downloaded_mb(pip_output: str) -> float:
    """What pip fetched, from its output: wheels it downloaded (their sizes as it prints them) or took from a local
    file index (their files' sizes; what a machine on PyPI would download)."""
    units = {"kB": 1 / 1024, "MB": 1.0, "GB": 1024.0}
    fetched = sum(float(n) * units[u] for n, u in re.findall(r"Downloading \S+ \(([\d.]+) (kB|MB|GB)\)", pip_output))
    local = set(re.findall(r"Processing (/\S+\.(?:whl|tar\.gz))", pip_output))
    return round(fetched + sum(Path(p).stat().st_size for p in local if Path(p).is_file()) / 2**20, 1)


def fresh_clone(folder: Path) -> dict:
    """Both phases of `make demo` in a fresh clone: the install, then the run."""
    if folder.exists():
        raise SystemExit(f"{folder} exists; expected a path for a fresh clone")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(folder)], check=True)
    cache = folder / ".bench-pip-cache"  # empty: every package is downloaded, and this is what was
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_CACHE_DIR"] = str(cache)
    install = _timed(["make", ".venv/.installed-base"], folder, env, folder / "install.log")
    run = _timed(["make", "demo"], folder, env, folder / "demo.log")
    pip_output = (folder / "install.log").read_text()
    weights = re.search(r"^\[weights\] (.+)$", (folder / "demo.log").read_text(), re.M)
    result = {"install": {**install, "download_mb": downloaded_mb(pip_output),
                          "venv_mb": round(_size(folder / ".venv") / 2**20)},
              "run": {**run, "weights": weights[1] if weights else None}, "cpus": os.cpu_count()}
    (folder / "bench_demo.json").write_text(json.dumps(result, indent=1))
    for phase in ("install", "run"):
        r = result[phase]
        print(f"make demo, {phase}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU, load average "
              f"{r['load'][0]:.1f} before / {r['load'][1]:.1f} after, {os.cpu_count()} CPUs")
    print(f"download {result['install']['download_mb']} MB, .venv {result['install']['venv_mb']} MB; the demo's "
          f"weights: {result['run']['weights']} (a download of real weights is not counted)")
    return result


if __name__ == "__main__":
    main()
