#!/usr/bin/env python
"""Every row of issue 13's table in one run, side by side: the reward close to the hardware, high-resolution
inputs, best-of-N scoring and DRaFT / AlignProp steps.

    python benchmarks/bench_gpu.py --device cuda      # the issue's sizes, < 6 min on one H100 / H200
    python benchmarks/bench_gpu.py                    # CPU: the same rows, fewer images and steps
    python benchmarks/bench_gpu.py --smoke            # tiny models, ~20 s on CPU (run by the test suite)

Random weights throughout (the paper architecture; an SD 1.5-architecture pipeline built from its configs in
code), so nothing is downloaded. Sections:

* reward: fwd+bwd w.r.t. the pixels at 224 px (two batch sizes), the two bare encoders, and no-grad scoring,
  under bf16 autocast, eager and with ``MSTCLIPIQAReward(compile=...)``, each as a fraction of the rate of a
  large bf16 matmul timed interleaved with them (FLOPs counted with ``FlopCounterMode``);
* highres: the reward on 1024 px inputs against 224 px ones, now and with the preprocessing the banded resize
  replaced (``F.interpolate`` of the whole image), patched in for the comparison;
* best_of_n: scoring time over generation time, with images scored where they were made (now) and brought
  back from the CPU (before), and the bare reward on the same batch;
* finetune: DRaFT-1 and AlignProp steps against the sum of their parts timed alone (no-grad sampling, UNet
  fwd+bwd, VAE decode fwd+bwd, reward fwd+bwd); peak memory with and without denoiser checkpointing.

Timed functions are interleaved in a new seeded order every round and summarised by their median.
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

from benchmarks import gpu_report as report  # noqa: E402
from benchmarks.gpu_plan import SECTIONS, GpuPlan, plan_from_args  # noqa: E402
from benchmarks.harness.machine import device_name  # noqa: E402
from benchmarks.harness.memory import MALLOC_ENV  # noqa: E402
from benchmarks.harness.timing import MatmulStep  # noqa: E402
from mst_clipiqa.reward import MSTCLIPIQAReward  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes: checks that every row runs")
    parser.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--batch", type=int, help="the large 224 px batch (default 256 on CUDA, 8 on CPU)")
    parser.add_argument("--small-batch", type=int, help="the small 224 px batch (default 64 on CUDA, 2 on CPU)")
    parser.add_argument("--hr-batch", type=int, help="the high-resolution batch (default 32 on CUDA, 4 on CPU)")
    parser.add_argument("--repeats", type=int, help="timed rounds (median reported)")
    parser.add_argument("--compile-modes", help="torch.compile modes to time, comma-separated ('' for none; "
                        "default: default,reduce-overhead on CUDA, none on CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def describe(plan: GpuPlan) -> None:
    print(f"== issue 13 benchmark ({plan.profile}) ==")
    print(f"device  : {device_name(plan.device)}, torch {torch.__version__}")
    print(f"reward  : {'paper architecture (ViT-B/32 + ViT-B/16)' if plan.paper else 'tiny model'}, random "
          f"weights, {plan.dtype} autocast; compile modes {list(plan.compile_modes) or 'none'}")
    print(f"pipeline: {'SD 1.5 architecture from its configs' if plan.sd15 else 'tiny SD'}, random weights, "
          f"{plan.image_size} px, {plan.steps} DDIM steps")
    print(f"timing  : {plan.warmup} warm-up + {plan.repeats} interleaved rounds, median\n")


def run(plan: GpuPlan) -> dict:
    from benchmarks import gpu_generation, gpu_reward

    started = time.perf_counter()
    describe(plan)
    results: dict = {"plan": {k: str(v) for k, v in vars(plan).items()}, "device_name": device_name(plan.device),
                     "torch": torch.__version__}
    model = gpu_reward.build_reward_model(plan)
    if "reward" in plan.sections:
        matmul = MatmulStep(plan.matmul_n, plan.device, plan.dtype)
        matmul.calibrate(0.05 if plan.cuda else 0.2)
        results["reward"] = gpu_reward.measure_reward(plan, model, matmul)
        report.print_reward(plan, results["reward"])
    if "highres" in plan.sections:
        results["highres"] = gpu_reward.measure_highres(plan, model)
        report.print_highres(plan, results["highres"])
    reward = MSTCLIPIQAReward(model, dtype=plan.dtype)
    if "best_of_n" in plan.sections:
        results["best_of_n"] = gpu_generation.measure_best_of_n(plan, reward, gpu_generation.build_pipeline(plan))
        report.print_best_of_n(plan, results["best_of_n"])
    if "finetune" in plan.sections:
        results["finetune"] = gpu_generation.measure_finetune(plan, reward,
                                                              lambda: gpu_generation.build_pipeline(plan))
        report.print_finetune(results["finetune"])
    results["elapsed_s"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = plan_from_args(args)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # "modules ... should be kept in float32", once per cast pipeline
    # every compile mode x tower x grad mode x batch size is a cache entry of the same code object
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    results = run(plan)
    command = "python benchmarks/bench_gpu.py" + (" --smoke" if plan.smoke else "") + \
        (f" --device {args.device}" if plan.cuda else "") + (f" --threads {args.threads}" if args.threads else "")
    report.print_summary(plan, results, device_name(plan.device), command)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    # On CPU, glibc must return freed memory at once for peak RSS to measure each step; that is read at start-up.
    if torch.device(parse_args().device).type == "cpu" and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    main()
