#!/usr/bin/env python
"""Benchmark the MST-CLIPIQA differentiable reward against its targets.

    python benchmarks/bench_reward.py [--quick] [--device cuda] [--profile] [--json out.json]

Runs the paper architecture (open_clip ViT-B/32 coarse + ViT-B/16 fine, variant A)
with random weights, so nothing is downloaded, and measures side by side:

1. overhead: reward forward+backward (w.r.t. the [0, 1] images) over the two bare
   frozen encoders' forward+backward (w.r.t. their already normalised 224 px
   input); target <= 1.05. The reward's own work (input checks, preprocessing,
   fusion + heads) is also timed alone, a steadier cross-check;
2. achieved FLOP rate of the reward forward+backward (FLOPs counted with
   ``FlopCounterMode``) over the rate of a large fp32 matmul timed the same way
   in the same run; target >= 0.85;
3. throughput of the reward forward+backward in fp32 and under bf16 autocast;
4. peak memory of one reward backward (batch 4, 512 px images) with and without
   gradient checkpointing, each in a fresh subprocess (CPU: peak RSS above the
   RSS before the step; CUDA: ``max_memory_allocated``); target ratio <= 0.5.

Timed functions are interleaved round-robin (rotating the order every round) and
summarised by their median, so that load from other processes hits every
variant alike. Where a target is missed (or with ``--profile``) the torch
profiler breaks the time down by operator. The script ends with a markdown
table for the README.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TARGET_OVERHEAD = 1.05
TARGET_FLOP_FRACTION = 0.85
TARGET_MEMORY_RATIO = 0.5
MEMORY_RESULT = "MEMORY_RESULT "
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# --------------------------------------------------------------------------- setup

def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def build_model(device: torch.device):
    from reward import MSTCLIPIQA, MSTCLIPIQAConfig

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights were loaded
    try:
        torch.manual_seed(0)
        model = MSTCLIPIQA(MSTCLIPIQAConfig.paper(variant="A", pretrained=False))
    finally:
        root.setLevel(level)
    return model.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- timed steps

def reward_step(reward, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Reward forward + gradient w.r.t. the images only (``backward(inputs=...)``, the same work as
    ``autograd.grad``, which FlopCounterMode's module hooks do not support)."""

    def step():
        images.grad = None
        reward(images).sum().backward(inputs=[images])
        return images.grad

    return step


def encoders_step(model, pixels_coarse: torch.Tensor, pixels_fine: torch.Tensor,
                  dtype: torch.dtype | None = None) -> Callable[[], torch.Tensor]:
    """The two bare frozen encoders: forward + gradient w.r.t. their normalised input only."""
    inputs = [pixels_coarse] if pixels_fine is pixels_coarse else [pixels_coarse, pixels_fine]

    def step():
        with autocast(pixels_coarse.device, dtype):
            f_coarse = model.coarse.encode_image(pixels_coarse)
            f_fine = model.fine.encode_image(pixels_fine)
        for x in inputs:
            x.grad = None
        (f_coarse.sum() + f_fine.sum()).backward(inputs=inputs)
        return pixels_coarse.grad

    return step


class MatmulStep:
    """``inner`` back-to-back n x n matmuls per call, so that one call lasts long enough to time."""

    def __init__(self, n: int, device: torch.device, dtype: torch.dtype):
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device, dtype)
        self.b = torch.randn(n, n, generator=g).to(device, dtype)
        self.c = torch.empty(n, n, device=device, dtype=dtype)
        self.n, self.inner, self.device = n, 1, device

    def __call__(self):
        for _ in range(self.inner):
            torch.matmul(self.a, self.b, out=self.c)
        return self.c

    def calibrate(self, seconds: float) -> None:
        self()  # warm-up
        sync(self.device)
        t0 = time.perf_counter()
        self()
        sync(self.device)
        self.inner = max(1, math.ceil(seconds / max(time.perf_counter() - t0, 1e-6)))

    @property
    def flops(self) -> int:
        return 2 * self.n ** 3 * self.inner


def time_interleaved(fns: dict[str, Callable], device: torch.device, warmup: int,
                     repeats: int) -> dict[str, list[float]]:
    """Round-robin timing (order rotated each round); returns the wall seconds of every call per name."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def own_work_steps(reward, images: torch.Tensor, pixels: torch.Tensor) -> dict[str, Callable]:
    """The reward's work around the encoders, each part timed alone: input checks, preprocessing
    (fwd+bwd to the images), and fusion + heads (fwd+bwd to the two stream embeddings)."""
    from reward.backbones.preprocess import preprocess
    from reward.scoring.inputs import check_image_values

    model = reward.model
    with torch.no_grad():
        f_c = model.coarse.encode_image(pixels[:1]).expand(len(images), -1).clone().requires_grad_(True)
        f_f = model.fine.encode_image(pixels[:1]).expand(len(images), -1).clone().requires_grad_(True)

    def checks():
        check_image_values(images, reward.input_range, reward.tolerance)

    def prep():
        images.grad = None
        x_c = preprocess(images, model.coarse.image_spec)
        x_f = x_c if model.fine.image_spec == model.coarse.image_spec else preprocess(images, model.fine.image_spec)
        (x_c.sum() + (x_f.sum() if x_f is not x_c else 0)).backward(inputs=[images])

    def heads():
        scores = model.score_features(f_c, f_f)
        sum(s.sum() for s in scores.values()).backward(inputs=[f_c, f_f])

    return {"input checks": checks, "preprocess": prep, "fusion + heads": heads}


def med(xs: list[float]) -> float:
    return statistics.median(xs)


# --------------------------------------------------------------------------- FLOPs

def _cpu_sdpa_mapping() -> dict:
    """FlopCounterMode has no formula for the CPU flash-attention kernels: give them the SDPA ones."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    mapping = {}
    if not (hasattr(fc, "sdpa_flop_count") and hasattr(fc, "sdpa_backward_flop_count")):
        return mapping
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        def fwd(q, k, v, *args, out_shape=None, **kwargs):
            return fc.sdpa_flop_count(q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
            return fc.sdpa_backward_flop_count(grad_out, q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return {k: v for k, v in mapping.items() if k not in fc.flop_registry}


def count_flops(fn: Callable) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping())
    with counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- profiler

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


def _self_time(evt, device: torch.device) -> float:
    if device.type == "cuda":
        return getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0.0))
    return evt.self_cpu_time_total


OpStats = dict[tuple[str, str], tuple[float, int]]  # (aten op, input shapes) -> (self ms, calls)


def profile_ops(fn: Callable, device: torch.device) -> OpStats:
    """Self time and calls per aten operator and input shapes of one call of ``fn`` (on CUDA: the
    device time of the kernels each aten operator launched)."""
    from torch.profiler import ProfilerActivity, profile

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
    out: dict[str, tuple[float, int]] = {}
    for (name, _), (t, n) in ops.items():
        t0, n0 = out.get(name, (0.0, 0))
        out[name] = (t0 + t, n0 + n)
    return out


def print_breakdown(title: str, ops: OpStats, top: int = 8) -> None:
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


# --------------------------------------------------------------------------- memory

def _proc_status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS. True if that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    hwm, rss = _proc_status_kib("VmHWM"), _proc_status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 4096


def memory_worker(mode: str, device: torch.device, batch: int, size: int) -> dict:
    """One fresh process: peak memory of one reward forward+backward above the state after building."""
    from reward import MSTCLIPIQAReward

    model = build_model(device)
    reward = MSTCLIPIQAReward(model, gradient_checkpointing=(mode == "ckpt"))
    torch.manual_seed(1)
    images = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    step = reward_step(reward, images)
    step()  # warm-up: one-time allocations (kernel caches, thread pools) are not the step's memory
    gc.collect()
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        grad = step()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        method = "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before"
        return {"mode": mode, "peak_bytes": peak, "baseline_bytes": base, "method": method,
                "grad_norm": float(grad.norm())}
    base_kib = _proc_status_kib("VmRSS")
    if base_kib is not None and _reset_peak_rss():
        grad = step()
        peak_kib = _proc_status_kib("VmHWM")
        method = ("peak RSS: VmHWM (reset via /proc/self/clear_refs=5) minus VmRSS before the step, fresh "
                  "process per config, after one warm-up step; glibc MALLOC_MMAP_THRESHOLD_=65536 so freed "
                  "tensors go back to the OS")
    else:  # no resettable high-water mark: ru_maxrss is an upper bound that includes the warm-up
        import resource

        base_kib = _proc_status_kib("VmRSS") or 0
        grad = step()
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss minus RSS before the step (peak could not be reset: includes the warm-up step)"
    return {"mode": mode, "peak_bytes": (peak_kib - base_kib) * 1024, "baseline_bytes": base_kib * 1024,
            "method": method, "grad_norm": float(grad.norm())}


def run_memory_subprocesses(args, threads: int) -> dict[str, dict]:
    """Both configurations at once, each in its own fresh process (on CPU each gets half the cores)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.device == "cpu":
        env.update(MALLOC_ENV)
        threads = max(1, threads // 2)
    procs = {}
    for mode in ("plain", "ckpt"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", mode, "--device", args.device,
               "--memory-batch", str(args.memory_batch), "--memory-size", str(args.memory_size),
               "--threads", str(threads)]
        procs[mode] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for mode, proc in procs.items():
        out, err = proc.communicate()
        for line in out.splitlines():
            if line.startswith(MEMORY_RESULT):
                results[mode] = json.loads(line[len(MEMORY_RESULT):])
        if mode not in results:
            raise RuntimeError(f"memory worker {mode!r} failed (exit {proc.returncode}):\n{out}\n{err}")
    return results


# --------------------------------------------------------------------------- report

def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller batch (~1.5 min on CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch", type=int, help="timing batch (default: 8 on CPU, 4 with --quick; 64 on CUDA)")
    parser.add_argument("--warmup", type=int, help="warm-up rounds before timing")
    parser.add_argument("--repeats", type=int, help="timed rounds (median reported)")
    parser.add_argument("--matmul-size", type=int, help="reference matmul side (default 2048 CPU, 8192 CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the cores this process may use)")
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--memory-size", type=int, default=512)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="operator breakdown (default: only when a target is missed, never with --quick)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--memory-worker", choices=["plain", "ckpt"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)

    if args.memory_worker:
        result = memory_worker(args.memory_worker, device, args.memory_batch, args.memory_size)
        print(MEMORY_RESULT + json.dumps(result), flush=True)
        return

    cuda = device.type == "cuda"
    batch = args.batch or (64 if cuda else 4 if args.quick else 8)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    repeats = args.repeats or ((10 if args.quick else 30) if cuda else (3 if args.quick else 5))
    bf16_repeats = repeats if cuda else 1 if args.quick else 2
    matmul_n = args.matmul_size or (8192 if cuda else 2048)
    started = time.perf_counter()
    results: dict = {"device": args.device, "batch": batch, "repeats": repeats, "threads": threads,
                     "torch": torch.__version__}

    from reward import MSTCLIPIQAReward
    from reward.backbones.preprocess import preprocess

    print("== MST-CLIPIQA reward benchmark ==")
    print(f"device  : {args.device} ({device_name(device)}), torch {torch.__version__}")
    if not cuda and hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        results["load_average"] = load
        print(f"load    : {load:.2f} (1-min load average at start, {threads} cores); other processes add noise, "
              "so the variants are timed interleaved")
    if cuda:
        print(f"tf32    : matmul {torch.backends.cuda.matmul.allow_tf32}, cudnn {torch.backends.cudnn.allow_tf32}")
    t0 = time.perf_counter()
    model = build_model(device)
    print(f"model   : paper variant A, open_clip ViT-B-32 (coarse, + text) and ViT-B-16 (fine), random weights; "
          f"built in {time.perf_counter() - t0:.1f} s")
    print(f"timing  : batch {batch} at 224 px, {warmup} warm-up + {repeats} timed rounds, median\n")

    torch.manual_seed(0)
    images = torch.rand(batch, 3, 224, 224, device=device, requires_grad=True)
    spec_c, spec_f = model.coarse.image_spec, model.fine.image_spec
    pixels_c = preprocess(images.detach(), spec_c).clone().requires_grad_(True)
    pixels_f = pixels_c if spec_f == spec_c else preprocess(images.detach(), spec_f).clone().requires_grad_(True)

    reward32 = MSTCLIPIQAReward(model)
    fns = {"reward": reward_step(reward32, images), "encoders": encoders_step(model, pixels_c, pixels_f)}
    mm32 = MatmulStep(matmul_n, device, torch.float32)

    # FLOPs (one fwd+bwd each), then the timed rounds
    flops_reward = count_flops(fns["reward"])
    flops_enc = count_flops(fns["encoders"]) if not args.quick else None
    mm32.calibrate(0.4 if not cuda else 0.05)
    fns["matmul fp32"] = mm32
    times = time_interleaved(fns, device, warmup, repeats)
    t_reward, t_enc, t_mm = med(times["reward"]), med(times["encoders"]), med(times["matmul fp32"])

    overhead = t_reward / t_enc
    paired = med([a / b for a, b in zip(times["reward"], times["encoders"])])
    overhead_min = min(times["reward"]) / min(times["encoders"])
    own = time_interleaved(own_work_steps(reward32, images, pixels_c), device, 2, 5 if args.quick else 15)
    own_s = {name: med(ts) for name, ts in own.items()}
    overhead_own = 1 + sum(own_s.values()) / t_enc
    ips32 = batch / t_reward
    rate_reward = flops_reward / t_reward
    rate_mm = mm32.flops / t_mm
    flop_fraction = rate_reward / rate_mm
    results.update(reward_s=t_reward, encoders_s=t_enc, overhead=overhead, overhead_paired=paired,
                   overhead_min=overhead_min, own_work_s=own_s,
                   overhead_own_work=overhead_own, images_per_s_fp32=ips32, flops_reward=flops_reward,
                   flops_encoders=flops_enc, reward_flop_rate=rate_reward, matmul_flop_rate=rate_mm,
                   flop_fraction=flop_fraction, times=times)

    def spread(xs):
        return f"{med(xs):8.3f} s   (min {min(xs):.3f}, max {max(xs):.3f})"

    print("[1] reward overhead over the bare encoders (fp32, forward + backward to the input)")
    print(f"  reward   fwd+bwd w.r.t. [0,1] images   {spread(times['reward'])}")
    print(f"  encoders fwd+bwd w.r.t. normalised px  {spread(times['encoders'])}")
    print(f"  ratio of medians                       {overhead:8.3f}     target <= {TARGET_OVERHEAD}  "
          f"{verdict(overhead <= TARGET_OVERHEAD)}")
    ratios = [a / b for a, b in zip(times["reward"], times["encoders"])]
    print(f"  (median of per-round ratios {paired:.3f}, range {min(ratios):.3f} to {max(ratios):.3f}; "
          f"ratio of minima {overhead_min:.3f})")
    noisy = max(ratios) / min(ratios) > 1.1
    results["overhead_noisy"] = noisy
    parts = ", ".join(f"{name} {1e3 * t:.2f} ms" for name, t in own_s.items())
    print(f"  the reward's own work timed alone: {parts}")
    print(f"  -> 1 + own work / encoders = {overhead_own:.4f} (the overhead the reward's extra operators explain)")
    if noisy:
        print("  WARNING: per-round ratios spread over more than 10 %: other processes are competing for the "
              "cores, so the timed ratio is only good to about that; the own-work estimate is the steadier figure")
    print()

    print("[2] FLOP rate (fp32)")
    per_img = flops_reward / batch
    print(f"  FLOPs, reward fwd+bwd (FlopCounterMode) {flops_reward / 1e9:10.1f} GFLOP  "
          f"({per_img / 1e9:.2f} GFLOP / image)")
    if flops_enc is not None:
        print(f"  FLOPs, encoders fwd+bwd                 {flops_enc / 1e9:10.1f} GFLOP  "
              f"(reward - encoders = {(flops_reward - flops_enc) / 1e6:+.1f} MFLOP)")
    print(f"  reward achieved rate                    {rate_reward / 1e9:10.1f} GFLOP/s")
    print(f"  matmul {matmul_n}x{matmul_n} fp32 (x{mm32.inner} per call) {rate_mm / 1e9:10.1f} GFLOP/s   "
          f"{spread(times['matmul fp32'])}")
    print(f"  fraction                                {flop_fraction:10.3f}     target >= {TARGET_FLOP_FRACTION}  "
          f"{verdict(flop_fraction >= TARGET_FLOP_FRACTION)}\n")

    # bf16 autocast throughput (plus, outside --quick, a bf16 matmul for reference)
    ips16 = None
    if not args.skip_bf16:
        reward16 = MSTCLIPIQAReward(model, dtype=torch.bfloat16)
        fns16 = {"reward bf16": reward_step(reward16, images)}
        if not args.quick:
            mm16 = MatmulStep(matmul_n, device, torch.bfloat16)
            mm16.calibrate(0.4 if not cuda else 0.05)
            fns16["matmul bf16"] = mm16
        # fp32 already warmed the thread pools; --quick skips the bf16 warm-up (one timed round)
        times16 = time_interleaved(fns16, device, 0 if args.quick and not cuda else 1, bf16_repeats)
        t16 = med(times16["reward bf16"])
        ips16 = batch / t16
        results.update(reward_bf16_s=t16, images_per_s_bf16=ips16, times_bf16=times16)
    print(f"[3] throughput of the reward forward+backward (batch {batch}, 224 px)")
    print(f"  fp32                 {ips32:9.2f} images/s   ({t_reward:.3f} s / batch)")
    if ips16 is not None:
        print(f"  bf16 autocast        {ips16:9.2f} images/s   ({t16:.3f} s / batch, median of {bf16_repeats})  "
              f"= {ips16 / ips32:.2f} x fp32")
        if "matmul bf16" in times16:
            rate16 = mm16.flops / med(times16["matmul bf16"])
            results.update(matmul_bf16_rate=rate16, flop_fraction_bf16=flops_reward / t16 / rate16)
            print(f"  bf16 matmul {matmul_n}     {rate16 / 1e9:9.1f} GFLOP/s     -> reward FLOP rate in bf16 is "
                  f"{flops_reward / t16 / rate16:.3f} of it (no target)")
    print()

    # operator breakdown where a target is missed
    want_profile = args.profile if args.profile is not None else (
        not args.quick and (overhead > TARGET_OVERHEAD or flop_fraction < TARGET_FLOP_FRACTION))
    if want_profile:
        what = "device" if cuda else "CPU"
        print(f"[profile] self {what} time per operator, one fwd+bwd each")
        ops_reward = profile_ops(fns["reward"], device)
        ops_enc = profile_ops(fns["encoders"], device)
        print_breakdown("reward fp32", ops_reward)
        print_breakdown("encoders fp32", ops_enc)
        print_extra_ops("the reward", ops_reward, "the encoders", ops_enc)
        named = by_name(ops_reward)
        bmm = named.get("aten::bmm", (0.0, 0))[0] / sum(t for t, _ in named.values())
        if bmm > 0.05:
            print(f"  note: aten::bmm takes {100 * bmm:.0f} % of the reward: in a plain ViT it comes from "
                  "nn.MultiheadAttention's in-projection on the non-contiguous (L, N, D) view of a batch-first "
                  "input, which at::matmul does not fold into one mm when the weight does not require grad "
                  "(frozen backbone), so it runs a batched matmul against an expanded weight.")
        if not args.skip_bf16 and (cuda or not args.quick):
            ops16 = profile_ops(reward_step(MSTCLIPIQAReward(model, dtype=torch.bfloat16), images), device)
            print_breakdown("reward bf16 autocast", ops16)
        print()

    # memory
    mem = None
    if not args.skip_memory:
        print(f"[4] peak memory of one reward backward (batch {args.memory_batch}, "
              f"{args.memory_size} px input), one fresh process per configuration, run side by side")
        workers = run_memory_subprocesses(args, threads)
        plain, ckpt = workers["plain"], workers["ckpt"]
        mem = ckpt["peak_bytes"] / plain["peak_bytes"]
        results.update(memory_plain_bytes=plain["peak_bytes"], memory_ckpt_bytes=ckpt["peak_bytes"],
                       memory_ratio=mem, memory_method=plain["method"])
        print(f"  method: {plain['method']}" + ("" if cuda else f"; {max(1, threads // 2)} thread(s) per worker"))
        print(f"  without checkpointing  {fmt_bytes(plain['peak_bytes']):>10s}   "
              f"(above a baseline of {fmt_bytes(plain['baseline_bytes'])})")
        print(f"  with checkpointing     {fmt_bytes(ckpt['peak_bytes']):>10s}")
        print(f"  ratio                  {mem:10.3f}   target <= {TARGET_MEMORY_RATIO}  "
              f"{verdict(mem <= TARGET_MEMORY_RATIO)}")
        print(f"  (gradient norms agree: {plain['grad_norm']:.6g} vs {ckpt['grad_norm']:.6g})\n")

    elapsed = time.perf_counter() - started
    results["elapsed_s"] = elapsed
    where = "GPU" if cuda else "CPU"
    print(f"== summary ({device_name(device)}, torch {torch.__version__}, {elapsed:.0f} s) ==\n")
    print("| Measure | Value | Target | Status |")
    print("| --- | --- | --- | --- |")
    print(f"| Reward / bare encoders, fwd+bwd time (fp32, 224 px, batch {batch}) | {overhead:.3f} "
          f"| <= {TARGET_OVERHEAD} | {verdict(overhead <= TARGET_OVERHEAD)} |")
    print(f"| Reward fwd+bwd throughput, fp32 | {ips32:.2f} img/s | - | - |")
    if ips16 is not None:
        print(f"| Reward fwd+bwd throughput, bf16 autocast | {ips16:.2f} img/s ({ips16 / ips32:.2f}x fp32) | - | - |")
    print(f"| Reward FLOP rate / fp32 {matmul_n}^2 matmul rate | {flop_fraction:.3f} ({rate_reward / 1e9:.0f} / "
          f"{rate_mm / 1e9:.0f} GFLOP/s; {per_img / 1e9:.1f} GFLOP per image) | >= {TARGET_FLOP_FRACTION} "
          f"| {verdict(flop_fraction >= TARGET_FLOP_FRACTION)} |")
    if mem is not None:
        method = "peak RSS" if not cuda else "max_memory_allocated"
        print(f"| Peak memory of one backward, checkpointing / plain (batch {args.memory_batch}, "
              f"{args.memory_size} px; {method}) | {mem:.3f} ({fmt_bytes(results['memory_ckpt_bytes'])} / "
              f"{fmt_bytes(results['memory_plain_bytes'])}) | <= {TARGET_MEMORY_RATIO} "
              f"| {verdict(mem <= TARGET_MEMORY_RATIO)} |")
    print(f"\nMeasured on {where}: {device_name(device)}, torch {torch.__version__}, "
          f"`python benchmarks/bench_reward.py{' --quick' if args.quick else ''}"
          f"{' --device ' + args.device if cuda else ''}`.")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
