"""Peak memory of a block of code (CUDA allocator or process RSS) and worker subprocesses that report results."""
from __future__ import annotations

import gc
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import torch

from .timing import sync

# glibc: return freed tensors to the OS at once, so that RSS follows what is really in use
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
RESULT = "WORKER_RESULT "


def proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, ...); None where there is none."""
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS. True if that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm, rss = proc_status_kib("VmHWM"), proc_status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 4096


def max_rss_bytes() -> int:
    """The process's peak RSS so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Context manager: the most memory the ``with`` block holds above what was in use when it began.

    After the block, ``peak_bytes`` and ``baseline_bytes`` hold the figures and ``method`` says how they were got:
    ``"cuda"``: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` at the start;
    ``"vmhwm"``: peak RSS (VmHWM, reset through /proc/self/clear_refs) minus RSS at the start;
    ``"ru_maxrss"``: where VmHWM cannot be reset, ``ru_maxrss`` minus RSS at the start (it includes earlier peaks);
    ``"ru_maxrss growth"``: with ``reset_rss=False``, the growth of ``ru_maxrss`` over the block.
    """

    def __init__(self, device: torch.device | str, reset_rss: bool = True):
        self.device, self.reset_rss = torch.device(device), reset_rss
        self.peak_bytes = self.baseline_bytes = 0
        self.method = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda"
        elif not self.reset_rss:
            self.baseline_bytes, self.method = max_rss_bytes(), "ru_maxrss growth"
        else:
            self.baseline_bytes = (proc_status_kib("VmRSS") or 0) * 1024
            self.method = "vmhwm" if reset_peak_rss() else "ru_maxrss"
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        if self.method == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "vmhwm":
            peak = (proc_status_kib("VmHWM") or 0) * 1024
        else:
            peak = max_rss_bytes()
        self.peak_bytes = peak - self.baseline_bytes


def emit_result(result: dict) -> None:
    """In a worker: hand ``result`` back to the ``run_workers`` that started it."""
    print(RESULT + json.dumps(result), flush=True)


def run_workers(script: str | Path, worker_args: dict[str, list[str]], env: dict[str, str] | None = None,
                parallel: bool = True, cwd: str | Path | None = None) -> dict[str, dict]:
    """Run ``script`` once per entry of ``worker_args``, each in a fresh process (all at once, or one after
    another), and return what each handed back with ``emit_result``, by name."""
    def start(args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(Path(script).resolve()), *args], env=env, cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = {name: start(args) for name, args in worker_args.items()} if parallel else {}
    results = {}
    for name, args in worker_args.items():
        proc = procs.get(name) or start(args)
        out, err = proc.communicate()
        for line in out.splitlines():
            if line.startswith(RESULT):
                results[name] = json.loads(line[len(RESULT):])
        if name not in results:
            raise RuntimeError(f"worker {name!r} failed (exit {proc.returncode}):\n{out}\n{err}")
    return results
