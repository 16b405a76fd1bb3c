"""Fine-tuning throughput with 1 and 2 processes (``torchrun``, gloo on CPU), side by side in one run.

    python benchmarks/bench_finetune_processes.py               # CPU: 1 and 2 processes
    python benchmarks/bench_finetune_processes.py --device cuda # one process per GPU (needs 2 GPUs for 2)

Every configuration runs under ``torchrun --standalone`` in its own processes: the
tiny SD pipeline, a tiny reward, DRaFT-1. Time per step is the median over
``--repeats`` optimizer steps after one warm-up step, measured on rank 0 between
barriers (a step ends with the gradient all-reduce, so the processes move in
lockstep). Images per second count every process's images. The configurations
run ``--rounds`` times, interleaved, and each reports its median round, so that a
busy spell of a shared machine does not fall on one configuration only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a lighthouse at dusk", "a bowl of fruit", "a red car", "a cat on a sofa"]


def worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
    from mst_clipiqa.reward import MSTCLIPIQAReward

    config = RewardFinetuneConfig(num_inference_steps=spec["steps"],
                                  run=RunConfig(batch_size=spec["batch"], height=spec["size"], width=spec["size"],
                                                cpu=spec["device"] == "cpu", progress_bar=False))
    trainer = RewardFinetuner(tiny_sd_pipeline(), MSTCLIPIQAReward.from_pretrained("tiny"), PROMPTS, config)
    acc, times = trainer.accelerator, []
    for _ in range(spec["repeats"] + 1):
        acc.wait_for_everyone()
        start = time.perf_counter()
        trainer.train_step()
        acc.wait_for_everyone()
        times.append(time.perf_counter() - start)
    if acc.is_main_process:
        step = statistics.median(times[1:])
        print(json.dumps({"processes": acc.num_processes, "step_s": step,
                          "images_s": spec["batch"] * acc.num_processes / step}))


def run(spec: dict, processes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(processes), __file__, "--worker", json.dumps(spec)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["processes"] != processes:
        raise RuntimeError(f"asked for {processes} processes, the run had {result['processes']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--inference-steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2, help="images per process per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each configuration's median")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same flags
    if args.worker:
        worker(json.loads(args.worker))
        return

    base = {"device": args.device, "size": args.size, "steps": args.inference_steps, "repeats": args.repeats}
    rows = {  # (processes, threads per process, images per process)
        "1 process, 1 thread": (1, 1, args.batch),
        "1 process, 2 threads": (1, 2, args.batch),
        f"2 processes x 1 thread, batch {args.batch} each": (2, 1, args.batch),
        f"2 processes x 1 thread, batch {max(args.batch // 2, 1)} each (same images/step)":
            (2, 1, max(args.batch // 2, 1)),
    }
    print(f"DRaFT-1 fine-tuning, tiny SD UNet (32, 64), {args.size}px, {args.inference_steps} DDIM steps, "
          f"device {args.device}, torchrun --standalone (gloo on CPU), median of {args.repeats} steps, "
          f"median of {args.rounds} interleaved rounds")
    rounds = [{name: run({**base, "threads": t, "batch": b}, p) for name, (p, t, b) in rows.items()}
              for _ in range(args.rounds)]
    results = {name: sorted((r[name] for r in rounds), key=lambda r: r["step_s"])[args.rounds // 2] for name in rows}
    ref = results["1 process, 1 thread"]
    print(f"{'configuration':<62} {'s/step':>7} {'steps/s':>8} {'images/s':>9} {'x 1 proc':>9}")
    for name, r in results.items():
        print(f"{name:<62} {r['step_s']:7.3f} {1 / r['step_s']:8.3f} {r['images_s']:9.2f} "
              f"{r['images_s'] / ref['images_s']:9.2f}")


if __name__ == "__main__":
    main()
