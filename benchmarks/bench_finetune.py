"""Fine-tuning step cost (DRaFT-K=1 vs full backprop, AlignProp, ReFL) and best-of-N scoring cost.

    python benchmarks/bench_finetune.py                 # CPU, small pipeline, prints ratios
    python benchmarks/bench_finetune.py --device cuda --size 256 --inference-steps 20

Each fine-tuning configuration runs in its own subprocess, so peak memory is
not shared between them. Peak memory is the extra memory the training steps
need beyond sampling the same batch without gradients: on CPU the growth of
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak RSS) from
after a no-grad sample to after the training steps; on CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before them.
Time per step is the median over ``--repeats`` steps after one warm-up step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.memory import PeakMemory, emit_result, run_workers  # noqa: E402
from benchmarks.harness.timing import timed  # noqa: E402

PROMPTS = ["a lighthouse at dusk", "a bowl of fruit"]


def _configs(steps: int) -> dict[str, dict]:
    return {
        "DRaFT-K (K=1)": {"method": "draft", "draft_k": 1},
        f"full backprop (K={steps})": {"method": "draft", "draft_k": steps},
        f"full backprop + checkpointing (AlignProp, K={steps})": {"method": "alignprop",
                                                                  "alignprop_k_range": (steps, steps)},
        "ReFL (one step with grad)": {"method": "refl", "refl_window": max(steps // 4, 1)},
    }


def worker(spec: dict) -> dict:
    """Run one configuration in this process; returns its time per step and extra peak memory."""
    import torch

    torch.set_num_threads(spec["threads"])
    from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner
    from mst_clipiqa.integrations.finetune.config import from_flat_settings
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
    from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

    device = spec["device"]
    torch.manual_seed(0)
    reward = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).eval()).to(device)
    config = from_flat_settings(RewardFinetuneConfig, {
        "num_inference_steps": spec["steps"], "batch_size": spec["batch"], "height": spec["size"],
        "width": spec["size"], "progress_bar": False, "max_grad_norm": None, **spec["config"]})
    trainer = RewardFinetuner(tiny_sd_pipeline(device=device), reward, PROMPTS, config)
    trainer.evaluate(PROMPTS * (spec["batch"] // 2 or 1), list(range(max(spec["batch"], 2))))  # no-grad baseline
    with PeakMemory(device, reset_rss=False) as memory:  # on CPU: the growth of ru_maxrss
        times = [timed(trainer.train_step, device) for _ in range(spec["repeats"] + 1)]
    return {"step_s": statistics.median(times[1:]), "peak_mb": memory.peak_bytes / 2**20}


def bench_best_of_n(args: argparse.Namespace) -> list[tuple[str, dict]]:
    import torch

    torch.set_num_threads(args.threads)
    from mst_clipiqa.integrations import best_of_n
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
    from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

    pipe = tiny_sd_pipeline(device=args.device)
    rewards = {"tiny reward": MSTCLIPIQAConfig.tiny()}
    if not args.quick:
        rewards["paper-size reward (ViT-B/32 + B/16, random weights)"] = MSTCLIPIQAConfig.paper(pretrained=False)
    rows = []
    for name, cfg in rewards.items():
        torch.manual_seed(0)
        reward = MSTCLIPIQAReward(MSTCLIPIQA(cfg).eval()).to(args.device)
        kwargs = dict(n=args.n, chunk_size=args.chunk, num_inference_steps=args.inference_steps, guidance_scale=5.0,
                      height=args.size, width=args.size)
        best_of_n(pipe, "warm up", reward, **{**kwargs, "n": 2})
        ranking = best_of_n(pipe, PROMPTS[0], reward, **kwargs)
        rows.append((name, ranking.timings))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (latents are size / 2)")
    parser.add_argument("--inference-steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable timings on busy hosts)")
    parser.add_argument("--n", type=int, default=8, help="best-of-N candidates")
    parser.add_argument("--chunk", type=int, default=4, help="best-of-N candidates per pipeline call")
    parser.add_argument("--quick", action="store_true", help="skip the paper-size reward")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit_result(worker(json.loads(args.worker)))
        return

    print(f"device {args.device}, tiny SD UNet (32, 64), {args.size}px, {args.inference_steps} DDIM steps, "
          f"batch {args.batch}, {args.threads} CPU thread(s)")
    memory = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "ru_maxrss growth"
    print(f"\nfine-tuning step (median of {args.repeats}); extra peak memory = {memory} over a no-grad sample")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    spec = {"device": args.device, "size": args.size, "steps": args.inference_steps, "batch": args.batch,
            "repeats": args.repeats, "threads": args.threads}
    worker_args = {name: ["--worker", json.dumps({"config": config, **spec})]
                   for name, config in _configs(args.inference_steps).items()}
    results = run_workers(__file__, worker_args, env, parallel=False, cwd=ROOT)
    ref = results["DRaFT-K (K=1)"]
    print(f"{'configuration':<52} {'s/step':>8} {'x K=1':>7} {'peak MB':>9} {'x K=1':>7}")
    for name, r in results.items():
        print(f"{name:<52} {r['step_s']:8.3f} {r['step_s'] / ref['step_s']:7.2f} {r['peak_mb']:9.1f} "
              f"{r['peak_mb'] / max(ref['peak_mb'], 1e-9):7.2f}")

    print(f"\nbest-of-{args.n}: scoring time as a fraction of generation time "
          f"({args.inference_steps} steps, guidance 5, {args.size}px)")
    for name, t in bench_best_of_n(args):
        print(f"{name:<52} generation {t['generation_s']:7.3f}s  scoring {t['scoring_s']:7.3f}s  "
              f"ratio {t['scoring_s'] / t['generation_s']:.3f}")


if __name__ == "__main__":
    main()
