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

Timed functions are interleaved (a new seeded order every round) and
summarised by their median, so that load from other processes hits every
variant alike. Where a target is missed (or with ``--profile``) the torch
profiler breaks the time down by operator. The script ends with a markdown
table for docs/measured.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import reward_report as report  # noqa: E402
from benchmarks.harness.flops import count_flops  # noqa: E402
from benchmarks.harness.machine import cpu_count  # noqa: E402
from benchmarks.harness.memory import MALLOC_ENV, emit_result, run_workers  # noqa: E402
from benchmarks.harness.timing import MatmulStep, med, time_interleaved  # noqa: E402
from benchmarks.reward_workload import (  # noqa: E402
    Plan,
    Workload,
    make_workload,
    memory_worker,
    own_work_steps,
    reward_step,
)
from mst_clipiqa.reward import MSTCLIPIQAReward  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def measure_fp32(plan: Plan, work: Workload) -> tuple[dict, int]:
    """[1] and [2]: FLOPs of one fwd+bwd each, then the reward, the encoders and a large matmul timed
    interleaved, and the reward's own work timed alone. Returns the figures and the matmuls per call."""
    mm32 = MatmulStep(plan.matmul_n, plan.device, torch.float32)
    flops_reward = count_flops(work.steps["reward"])
    flops_enc = count_flops(work.steps["encoders"]) if not plan.quick else None
    mm32.calibrate(plan.matmul_seconds)
    times = time_interleaved({**work.steps, "matmul fp32": mm32}, plan.device, plan.warmup, plan.repeats)
    own = time_interleaved(own_work_steps(work), plan.device, 2, 5 if plan.quick else 15)
    return fp32_figures(times, own, flops_reward, flops_enc, mm32.flops, plan.batch), mm32.inner


def fp32_figures(times: dict[str, list[float]], own: dict[str, list[float]], flops_reward: int,
                 flops_enc: int | None, matmul_flops: int, batch: int) -> dict:
    t_reward, t_enc, t_mm = med(times["reward"]), med(times["encoders"]), med(times["matmul fp32"])
    own_s = {name: med(ts) for name, ts in own.items()}
    ratios = report.round_ratios(times)
    rate_reward, rate_mm = flops_reward / t_reward, matmul_flops / t_mm
    return dict(reward_s=t_reward, encoders_s=t_enc, overhead=t_reward / t_enc, overhead_paired=med(ratios),
                overhead_min=min(times["reward"]) / min(times["encoders"]), own_work_s=own_s,
                overhead_own_work=1 + sum(own_s.values()) / t_enc, images_per_s_fp32=batch / t_reward,
                flops_reward=flops_reward, flops_encoders=flops_enc, reward_flop_rate=rate_reward,
                matmul_flop_rate=rate_mm, flop_fraction=rate_reward / rate_mm, times=times,
                overhead_noisy=max(ratios) / min(ratios) > 1.1)


def measure_bf16(plan: Plan, work: Workload, flops_reward: int) -> dict:
    """[3]: the reward under bf16 autocast (plus, outside --quick, a bf16 matmul for reference)."""
    fns = {"reward bf16": reward_step(MSTCLIPIQAReward(work.model, dtype=torch.bfloat16), work.images)}
    if not plan.quick:
        mm16 = MatmulStep(plan.matmul_n, plan.device, torch.bfloat16)
        mm16.calibrate(plan.matmul_seconds)
        fns["matmul bf16"] = mm16
    # fp32 already warmed the thread pools; --quick skips the bf16 warm-up (one timed round)
    times = time_interleaved(fns, plan.device, 0 if plan.quick and not plan.cuda else 1, plan.bf16_repeats)
    t16 = med(times["reward bf16"])
    figures = dict(reward_bf16_s=t16, images_per_s_bf16=plan.batch / t16, times_bf16=times)
    if "matmul bf16" in times:
        rate16 = mm16.flops / med(times["matmul bf16"])
        figures.update(matmul_bf16_rate=rate16, flop_fraction_bf16=flops_reward / t16 / rate16)
    return figures


def wants_profile(plan: Plan, results: dict) -> bool:
    """--profile / --no-profile, else only where a target is missed, never with --quick."""
    if plan.args.profile is not None:
        return plan.args.profile
    return not plan.quick and not (report.meets(results, "overhead") and report.meets(results, "flop_fraction"))


def run_memory_workers(plan: Plan) -> dict[str, dict]:
    """[4]: both configurations at once, each in its own fresh process."""
    args = plan.args
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({} if plan.cuda else MALLOC_ENV))
    common = ["--device", args.device, "--memory-batch", str(args.memory_batch), "--memory-size",
              str(args.memory_size), "--threads", str(plan.worker_threads)]
    return run_workers(__file__, {mode: ["--memory-worker", mode, *common] for mode in ("plain", "ckpt")}, env)


def memory_figures(workers: dict[str, dict]) -> dict:
    plain, ckpt = workers["plain"], workers["ckpt"]
    return dict(memory_plain_bytes=plain["peak_bytes"], memory_ckpt_bytes=ckpt["peak_bytes"],
                memory_ratio=ckpt["peak_bytes"] / plain["peak_bytes"], memory_method=plain["method"])


def run_benchmark(plan: Plan) -> dict:
    """Sections [1] to [4] and the summary; returns the figures."""
    started = time.perf_counter()
    results = report.print_header(plan)
    work = make_workload(report.announce_model(plan), plan.batch, plan.device)
    fp32, matmul_inner = measure_fp32(plan, work)
    results.update(fp32)
    report.print_overhead(results)
    report.print_flop_rate(plan, results, matmul_inner)
    if not plan.args.skip_bf16:
        results.update(measure_bf16(plan, work, results["flops_reward"]))
    report.print_throughput(plan, results)
    if wants_profile(plan, results):
        report.print_profile(plan, work)
    if not plan.args.skip_memory:
        report.print_memory_header(plan)
        workers = run_memory_workers(plan)
        results.update(memory_figures(workers))
        report.print_memory(plan, workers, results)
    results["elapsed_s"] = time.perf_counter() - started
    report.print_summary(plan, results)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    if args.memory_worker:
        emit_result(memory_worker(args.memory_worker, torch.device(args.device), args.memory_batch, args.memory_size))
        return
    results = run_benchmark(Plan.from_args(args, threads))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
