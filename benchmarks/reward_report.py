"""The reward benchmark's printed sections and its markdown summary, with the targets they are judged by."""
from __future__ import annotations

import os
import time

import torch

from benchmarks.harness.machine import device_name
from benchmarks.harness.profiling import print_breakdown, print_extra_ops, profile_ops, share
from benchmarks.harness.report import fmt_bytes, fmt_spread, markdown_table, verdict
from benchmarks.reward_workload import Plan, Workload, build_model, reward_step
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAReward

TARGETS = {"overhead": ("<=", 1.05), "flop_fraction": (">=", 0.85), "memory_ratio": ("<=", 0.5)}
NOISY_WARNING = ("  WARNING: per-round ratios spread over more than 10 %: other processes are competing for the "
                 "cores, so the timed ratio is only good to about that; the own-work estimate is the steadier figure")
BMM_NOTE = ("  note: aten::bmm takes {:.0f} % of the reward: in a plain ViT it comes from "
            "nn.MultiheadAttention's in-projection on the non-contiguous (L, N, D) view of a batch-first "
            "input, which at::matmul does not fold into one mm when the weight does not require grad "
            "(frozen backbone), so it runs a batched matmul against an expanded weight.")


def meets(results: dict, figure: str) -> bool:
    """Whether ``figure`` (overhead, flop_fraction or memory_ratio) meets its target."""
    op, bound = TARGETS[figure]
    return results[figure] <= bound if op == "<=" else results[figure] >= bound


def target(figure: str) -> str:
    """The target as printed, e.g. ``<= 1.05``."""
    op, bound = TARGETS[figure]
    return f"{op} {bound}"


def status(results: dict, figure: str) -> str:
    """``target <= 1.05  PASS`` (or MISSED) for ``figure``."""
    return f"target {target(figure)}  {verdict(meets(results, figure))}"


def round_ratios(times: dict[str, list[float]]) -> list[float]:
    """Reward time over encoders time in each round."""
    return [a / b for a, b in zip(times["reward"], times["encoders"])]


def print_header(plan: Plan) -> dict:
    """What runs where; returns the run's settings (and on CPU the load average) for the JSON."""
    results = {"device": plan.args.device, "batch": plan.batch, "repeats": plan.repeats, "threads": plan.threads,
               "torch": torch.__version__}
    print("== MST-CLIPIQA reward benchmark ==")
    print(f"device  : {plan.args.device} ({device_name(plan.device)}), torch {torch.__version__}")
    if not plan.cuda and hasattr(os, "getloadavg"):
        results["load_average"] = load = os.getloadavg()[0]
        print(f"load    : {load:.2f} (1-min load average at start, {plan.threads} cores); other processes add "
              "noise, so the variants are timed interleaved")
    if plan.cuda:
        print(f"tf32    : matmul {torch.backends.cuda.matmul.allow_tf32}, cudnn {torch.backends.cudnn.allow_tf32}")
    return results


def announce_model(plan: Plan) -> MSTCLIPIQA:
    """Builds the model, saying what it is and how it is timed."""
    t0 = time.perf_counter()
    model = build_model(plan.device)
    print(f"model   : paper variant A, open_clip ViT-B-32 (coarse, + text) and ViT-B-16 (fine), random weights; "
          f"built in {time.perf_counter() - t0:.1f} s")
    print(f"timing  : batch {plan.batch} at 224 px, {plan.warmup} warm-up + {plan.repeats} timed rounds, median\n")
    return model


def print_overhead(r: dict) -> None:
    times, ratios = r["times"], round_ratios(r["times"])
    print("[1] reward overhead over the bare encoders (fp32, forward + backward to the input)")
    print(f"  reward   fwd+bwd w.r.t. [0,1] images   {fmt_spread(times['reward'])}")
    print(f"  encoders fwd+bwd w.r.t. normalised px  {fmt_spread(times['encoders'])}")
    print(f"  ratio of medians                       {r['overhead']:8.3f}     {status(r, 'overhead')}")
    print(f"  (median of per-round ratios {r['overhead_paired']:.3f}, range {min(ratios):.3f} to {max(ratios):.3f}; "
          f"ratio of minima {r['overhead_min']:.3f})")
    parts = ", ".join(f"{name} {1e3 * t:.2f} ms" for name, t in r["own_work_s"].items())
    print(f"  the reward's own work timed alone: {parts}")
    print(f"  -> 1 + own work / encoders = {r['overhead_own_work']:.4f} "
          "(the overhead the reward's extra operators explain)")
    if r["overhead_noisy"]:
        print(NOISY_WARNING)
    print()


def print_flop_rate(plan: Plan, r: dict, matmul_inner: int) -> None:
    n, flops = plan.matmul_n, r["flops_reward"]
    print("[2] FLOP rate (fp32)")
    print(f"  FLOPs, reward fwd+bwd (FlopCounterMode) {flops / 1e9:10.1f} GFLOP  "
          f"({flops / plan.batch / 1e9:.2f} GFLOP / image)")
    if r["flops_encoders"] is not None:
        print(f"  FLOPs, encoders fwd+bwd                 {r['flops_encoders'] / 1e9:10.1f} GFLOP  "
              f"(reward - encoders = {(flops - r['flops_encoders']) / 1e6:+.1f} MFLOP)")
    print(f"  reward achieved rate                    {r['reward_flop_rate'] / 1e9:10.1f} GFLOP/s")
    print(f"  matmul {n}x{n} fp32 (x{matmul_inner} per call) {r['matmul_flop_rate'] / 1e9:10.1f} GFLOP/s   "
          f"{fmt_spread(r['times']['matmul fp32'])}")
    print(f"  fraction                                {r['flop_fraction']:10.3f}     {status(r, 'flop_fraction')}\n")


def print_throughput(plan: Plan, r: dict) -> None:
    ips32 = r["images_per_s_fp32"]
    print(f"[3] throughput of the reward forward+backward (batch {plan.batch}, 224 px)")
    print(f"  fp32                 {ips32:9.2f} images/s   ({r['reward_s']:.3f} s / batch)")
    if "images_per_s_bf16" in r:
        ips16 = r["images_per_s_bf16"]
        print(f"  bf16 autocast        {ips16:9.2f} images/s   ({r['reward_bf16_s']:.3f} s / batch, median of "
              f"{plan.bf16_repeats})  = {ips16 / ips32:.2f} x fp32")
    if "matmul_bf16_rate" in r:
        print(f"  bf16 matmul {plan.matmul_n}     {r['matmul_bf16_rate'] / 1e9:9.1f} GFLOP/s     -> reward FLOP "
              f"rate in bf16 is {r['flop_fraction_bf16']:.3f} of it (no target)")
    print()


def print_profile(plan: Plan, work: Workload) -> None:
    """Self time per operator of one fwd+bwd of the reward and of the encoders (and of the bf16 reward)."""
    print(f"[profile] self {'device' if plan.cuda else 'CPU'} time per operator, one fwd+bwd each")
    ops_reward = profile_ops(work.steps["reward"], plan.device)
    ops_enc = profile_ops(work.steps["encoders"], plan.device)
    print_breakdown("reward fp32", ops_reward)
    print_breakdown("encoders fp32", ops_enc)
    print_extra_ops("the reward", ops_reward, "the encoders", ops_enc)
    bmm = share(ops_reward, "aten::bmm")
    if bmm > 0.05:
        print(BMM_NOTE.format(100 * bmm))
    if not plan.args.skip_bf16 and (plan.cuda or not plan.quick):
        ops16 = profile_ops(reward_step(MSTCLIPIQAReward(work.model, dtype=torch.bfloat16), work.images), plan.device)
        print_breakdown("reward bf16 autocast", ops16)
    print()


def print_memory_header(plan: Plan) -> None:
    print(f"[4] peak memory of one reward backward (batch {plan.args.memory_batch}, "
          f"{plan.args.memory_size} px input), one fresh process per configuration, run side by side")


def print_memory(plan: Plan, workers: dict[str, dict], r: dict) -> None:
    plain, ckpt = workers["plain"], workers["ckpt"]
    print(f"  method: {plain['method']}" + ("" if plan.cuda else f"; {plan.worker_threads} thread(s) per worker"))
    print(f"  without checkpointing  {fmt_bytes(plain['peak_bytes']):>10s}   "
          f"(above a baseline of {fmt_bytes(plain['baseline_bytes'])})")
    print(f"  with checkpointing     {fmt_bytes(ckpt['peak_bytes']):>10s}")
    print(f"  ratio                  {r['memory_ratio']:10.3f}   {status(r, 'memory_ratio')}")
    print(f"  (gradient norms agree: {plain['grad_norm']:.6g} vs {ckpt['grad_norm']:.6g})\n")


def summary_rows(plan: Plan, r: dict) -> list[list[str]]:
    """The markdown table's rows: measure, value, target, status."""
    def row(measure: str, value: str, figure: str | None = None) -> list[str]:
        return [measure, value, target(figure) if figure else "-", verdict(meets(r, figure)) if figure else "-"]

    ips32 = r["images_per_s_fp32"]
    rows = [row(f"Reward / bare encoders, fwd+bwd time (fp32, 224 px, batch {plan.batch})", f"{r['overhead']:.3f}",
                "overhead"),
            row("Reward fwd+bwd throughput, fp32", f"{ips32:.2f} img/s")]
    if "images_per_s_bf16" in r:
        ips16 = r["images_per_s_bf16"]
        rows.append(row("Reward fwd+bwd throughput, bf16 autocast", f"{ips16:.2f} img/s ({ips16 / ips32:.2f}x fp32)"))
    rows.append(row(f"Reward FLOP rate / fp32 {plan.matmul_n}^2 matmul rate",
                    f"{r['flop_fraction']:.3f} ({r['reward_flop_rate'] / 1e9:.0f} / {r['matmul_flop_rate'] / 1e9:.0f} "
                    f"GFLOP/s; {r['flops_reward'] / plan.batch / 1e9:.1f} GFLOP per image)", "flop_fraction"))
    if "memory_ratio" in r:
        method = "peak RSS" if not plan.cuda else "max_memory_allocated"
        rows.append(row(f"Peak memory of one backward, checkpointing / plain (batch {plan.args.memory_batch}, "
                        f"{plan.args.memory_size} px; {method})", f"{r['memory_ratio']:.3f} "
                        f"({fmt_bytes(r['memory_ckpt_bytes'])} / {fmt_bytes(r['memory_plain_bytes'])})",
                        "memory_ratio"))
    return rows


def print_summary(plan: Plan, r: dict) -> None:
    name, command = device_name(plan.device), "python benchmarks/bench_reward.py"
    print(f"== summary ({name}, torch {torch.__version__}, {r['elapsed_s']:.0f} s) ==\n")
    print(markdown_table(["Measure", "Value", "Target", "Status"], summary_rows(plan, r)))
    flags = (" --quick" if plan.quick else "") + (" --device " + plan.args.device if plan.cuda else "")
    print(f"\nMeasured on {'GPU' if plan.cuda else 'CPU'}: {name}, torch {torch.__version__}, `{command}{flags}`.")
