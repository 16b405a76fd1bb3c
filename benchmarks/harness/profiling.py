"""Torch-profiler breakdown: self time per aten operator and input shapes, by category and by extra calls."""
from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from .timing import sync

CATEGORIES = [
    ("matmul (mm/addmm/bmm)", re.compile(r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|_addmm_activation)$")),
    ("attention (SDPA)", re.compile(r"scaled_dot_product|flash_attention|efficient_attention")),
    ("convolution", re.compile(r"conv")),
    ("layer norm", re.compile(r"layer_norm")),
    ("GELU", re.compile(r"gelu")),
    ("copy / cast / fill", re.compile(r"^aten::(copy_|_to_copy|to|fill_|zero_|clone|contiguous|zeros|empty.*)$")),
    ("elementwise add/mul/...", re.compile(r"^aten::(add|add_|mul|mul_|sub|div|div_|sum|sigmoid|relu|where)")),
    ("resize (interpolate)", re.compile(r"upsample|interpolate")),
]

OpStats = dict[tuple[str, str], tuple[float, int]]  # (aten op, input shapes) -> (self ms, calls)


def _self_time(evt, device: torch.device) -> float:
    if device.type == "cuda":
        return getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0))
    return evt.self_cpu_time_total


def profile_ops(fn: Callable[[], object], device: torch.device) -> OpStats:
    """Self time and calls per aten operator and input shapes of one call of ``fn`` (on CUDA: the
    device time of the kernels each aten operator launched)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)  # fn is already warm
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
        sync(device)
    ops: OpStats = {}
    for evt in prof.key_averages(group_by_input_shape=True):
        if not evt.key.startswith("aten::"):
            continue  # CUDA kernels: their time is already the self device time of the aten op that launched them
        key = (evt.key, str(evt.input_shapes))
        t, n = ops.get(key, (0.0, 0))
        ops[key] = (t + _self_time(evt, device) / 1e3, n + evt.count)
    return ops


def by_name(ops: OpStats) -> dict[str, tuple[float, int]]:
    """(self ms, calls) per operator, all input shapes together."""
    out: dict[str, tuple[float, int]] = {}
    for (name, _), (t, n) in ops.items():
        t0, n0 = out.get(name, (0.0, 0))
        out[name] = (t0 + t, n0 + n)
    return out


def share(ops: OpStats, name: str) -> float:
    """The fraction of the profiled self time spent in operator ``name``."""
    named = by_name(ops)
    return named.get(name, (0.0, 0))[0] / sum(t for t, _ in named.values())


def print_breakdown(title: str, ops: OpStats, top: int = 8) -> None:
    """Self time per category, then the ``top`` operators."""
    named = by_name(ops)
    total = sum(t for t, _ in named.values())
    cats: dict[str, float] = {}
    for name, (t, _) in named.items():
        cat = next((c for c, rx in CATEGORIES if rx.search(name)), "other")
        cats[cat] = cats.get(cat, 0.0) + t
    print(f"  {title}: {total:.0f} ms profiled")
    for cat, t in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"    {cat:<28s} {t:9.1f} ms  {100 * t / total:5.1f} %")
    print("    top operators:")
    for name, (t, n) in sorted(named.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"      {name[:56]:<56s} {n:5d} calls {t:9.1f} ms  {100 * t / total:5.1f} %")


def print_extra_ops(a_name: str, a: OpStats, b_name: str, b: OpStats, top: int = 10) -> None:
    """Calls (operator and input shapes) that ``a`` makes beyond ``b``: the structural difference."""
    extra = []
    for key, (t, n) in a.items():
        dn = n - b.get(key, (0.0, 0))[1]
        if dn > 0:
            extra.append((key, dn, t * dn / n))
    total = sum(e[2] for e in extra)
    print(f"  calls {a_name} makes beyond {b_name} (same operator and input shapes matched): "
          f"{len(extra)} kinds, {total:.1f} ms in all")
    for (name, shapes), dn, t in sorted(extra, key=lambda e: -e[2])[:top]:
        print(f"      {name[:40]:<40s} {dn:+4d} x {shapes[:60]:<60s} {t:8.2f} ms")
