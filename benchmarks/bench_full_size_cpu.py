"""The planner against the truth at full size, on the CPU: one real trainer step (DRaFT-1 and GRPO) on a shipped
architecture (SD 1.5, SDXL, SD3.5-medium) with random weights (no download) at 512 px, LoRA rank 4, gradient
checkpointing, the text encoders freed after encoding, in fp32 and bf16; each case in its own process. Measured:
the peak of the tensors the step allocates (the planner's allocation tracker on real tensors, what
``max_memory_allocated`` counts on a GPU) and the process's peak RSS (VmHWM) above its RSS before the step;
against the plan traced on meta tensors. Seconds and CPU seconds of the step.

    PYTHONPATH=. python benchmarks/bench_full_size_cpu.py [--pipeline sd1.5|sdxl|sd3.5-medium] [--dtypes fp32 bf16]
        [--methods draft grpo] [--without COMPONENT ...]

SD3.5 is built without T5-XXL by default (``--without text_encoder_3``; 9.5 GB in bf16): diffusers then hands the
transformer zeros of T5's embedding shape, so the step is the same size; the planner leaves the freed encoders out
of the weights either way. RAM: SD 1.5 about 10 GB at most in fp32; SDXL and SD3.5-medium in bf16 about 7 GB of
weights while the prompt is encoded, then a step of about 6 GiB (DRaFT). Minutes to tens of minutes per case.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

GiB = 1024**3
WITHOUT = {"sd3.5-medium": ("text_encoder_3",), "sd3.5-large": ("text_encoder_3",)}  # T5-XXL: too large for RAM


def _settings(method: str):
    from mst_clipiqa.integrations.planner import StepSettings

    return StepSettings(batch_size=1 if method == "draft" else 2, height=512, width=512, num_inference_steps=1,
                        gradient_checkpointing=True)


def worker(pipeline: str, method: str, dtype: str, without: tuple[str, ...] = ()) -> dict:
    """One step of ``method``'s trainer on ``pipeline`` (less the components ``without``) with random ``dtype``
    weights: measured and planned."""
    import torch

    from benchmarks.bench_planner import _reward
    from benchmarks.harness.memory import PeakMemory
    from mst_clipiqa.integrations.finetune.config import from_flat_settings
    from mst_clipiqa.integrations.finetune.trainers import CONFIGS, TRAINERS
    from mst_clipiqa.integrations.planner import AllocationTracker, plan, resident_bytes
    from mst_clipiqa.integrations.planner.architectures import random_pipeline
    from mst_clipiqa.integrations.planner.plan import DTYPES

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    s = _settings(method)
    pipe = random_pipeline(pipeline, DTYPES[dtype], "cpu", without)
    common = dict(method=method, num_inference_steps=s.num_inference_steps, max_steps=1, batch_size=s.batch_size,
                  cpu=True, progress_bar=False, height=s.height, width=s.width, lora_rank=4, guidance_scale=1.0,
                  mixed_precision="no" if dtype == "fp32" else dtype, text_encoders="free")
    if method == "draft":
        common.update(draft_k=1, gradient_checkpointing=True)
    else:
        common.update(num_steps=s.num_inference_steps, group_size=s.batch_size, prompts_per_step=1,
                      sde_window=(0, 1))
        (pipe.transformer if hasattr(pipe, "transformer") else pipe.unet).enable_gradient_checkpointing()
    trainer = TRAINERS[method](pipe, _reward("cpu"), ["a photo"], from_flat_settings(CONFIGS[method], common))
    weights = resident_bytes(*[m for m in pipe.components.values() if isinstance(m, torch.nn.Module)])
    cpu_start, start = time.process_time(), time.perf_counter()
    with PeakMemory("cpu") as rss, AllocationTracker() as tracker:
        trainer.train_step()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    planned = plan(pipeline, method, s, dtype=dtype, reward=_reward("meta"), text_encoders="free")
    name = pipeline + "".join(f" without {n}" for n in without)
    return {"pipeline": name, "method": method, "dtype": dtype, "seconds": seconds, "cpu_seconds": cpu,
            "weights_GiB": weights / GiB, "planned_weights_GiB": (planned.weights + planned.lora) / GiB,
            "step_GiB": tracker.peak / GiB, "planned_step_GiB": planned.step / GiB,
            "rss_step_GiB": rss.peak_bytes / GiB, "rss_peak_GiB": (rss.baseline_bytes + rss.peak_bytes) / GiB,
            "rss_method": rss.method, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="sd1.5", help="a shipped architecture (default: sd1.5)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--methods", nargs="+", default=["draft", "grpo"], choices=("draft", "grpo"))
    parser.add_argument("--without", nargs="*", metavar="COMPONENT",
                        help="components to leave out (default: text_encoder_3, T5-XXL, for SD3.5; else none)")
    parser.add_argument("--worker", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from benchmarks.harness.memory import MALLOC_ENV, emit_result, run_workers

    if args.worker:
        pipeline, method, dtype, *without = args.worker
        emit_result(worker(pipeline, method, dtype, tuple(without)))
        return
    without = WITHOUT.get(args.pipeline, ()) if args.without is None else tuple(args.without)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **MALLOC_ENV, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cases = {f"{m}-{d}": ["--worker", args.pipeline, m, d, *without] for d in args.dtypes for m in args.methods}
    results = run_workers(__file__, cases, env=env, parallel=False, cwd=root)  # one at a time: RSS is per process
    print(f"machine: CPU only (no GPU), {os.cpu_count()} cores; {sys.version.split()[0]}")
    print("| pipeline | method | dtype | weights GiB (planned) | step peak GiB: measured tensors | planned | "
          "planned / measured | step RSS GiB | process peak RSS GiB | s (CPU s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        print(f"| {r['pipeline']} | {r['method']} | {r['dtype']} | {r['weights_GiB']:.2f} "
              f"({r['planned_weights_GiB']:.2f}) | {r['step_GiB']:.2f} | {r['planned_step_GiB']:.2f} | "
              f"{r['planned_step_GiB'] / r['step_GiB']:.3f} | {r['rss_step_GiB']:.2f} | {r['rss_peak_GiB']:.2f} | "
              f"{r['seconds']:.0f} "
              f"({r['cpu_seconds']:.0f}) |")


if __name__ == "__main__":
    main()
