"""What one policy-gradient step costs against one DRaFT-1 step, and what the cheaper updates save.

    python benchmarks/bench_policy_step.py                         # tiny SD and SD3, 10 sampling steps
    python benchmarks/bench_policy_step.py --steps 4 --repeats 3 --pipes sd3

A DDPO / GRPO step samples its rollouts, then recomputes every recorded sampler step with gradients: that
recomputation is its cost. Rows, per pipeline, each one train step of 8 images (``--batch``):

* ``draft-1``: ``RewardFinetuner``, gradients through the last sampler step only;
* ``grpo``: ``PolicyTrainer``, every recorded step recomputed in its own denoiser call (``steps_per_call=1``);
* ``grpo, steps batched``: every recorded step in one denoiser call (``steps_per_call=0``): the same loss;
* ``grpo, SDE window``: the SDE and the training on the first half of the steps only (MixGRPO /
  Flow-GRPO-Fast's ``sde_window``): fewer steps recomputed, a different estimator.

The rows' steps interleave (a new seeded order each round, after one untimed warm-up step each); the table
gives the median CPU and wall seconds per step and their ratio to DRaFT-1's, measured in this one run.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.harness.machine import cpu_count, cpu_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from benchmarks.harness.seeds import cpu_seconds  # noqa: E402

PROMPTS = ["a cat", "a dog", "a red car", "a tree"]


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(1, 2, 3))


def trainers(pipe_name: str, steps: int, batch: int) -> dict:
    """One trainer per row, each on its own fresh pipeline."""
    from mst_clipiqa.integrations import (
        PolicyFinetuneConfig,
        PolicyTrainer,
        RewardFinetuneConfig,
        RewardFinetuner,
        RunConfig,
    )
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline

    make = tiny_sd3_pipeline if pipe_name == "sd3" else tiny_sd_pipeline

    def run(**kwargs) -> RunConfig:
        return RunConfig(learning_rate=1e-3, max_steps=10**6, progress_bar=False, cpu=True, seed=0, **kwargs)

    def policy(**settings) -> PolicyTrainer:
        config = PolicyFinetuneConfig(method="grpo", num_inference_steps=steps, guidance_scale=1.0, group_size=4,
                                      prompts_per_step=batch // 4, **settings, run=run())
        return PolicyTrainer(make(), brightness, PROMPTS, config)

    draft = RewardFinetuner(make(), brightness, PROMPTS,
                            RewardFinetuneConfig(method="draft", num_inference_steps=steps, run=run(batch_size=batch)))
    return {"draft-1": draft, "grpo": policy(steps_per_call=1), "grpo, steps batched": policy(steps_per_call=0),
            "grpo, SDE window": policy(sde_window=(0, max(1, steps // 2)))}


def measure(rows: dict, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """CPU and wall seconds of each row's ``train_step``, ``repeats`` rounds in a new seeded order each."""
    for trainer in rows.values():
        trainer.train_step()  # warm-up
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in rows}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(list(rows), len(rows)):
            cpu, wall = cpu_seconds(), time.perf_counter()
            rows[name].train_step()
            times[name][0].append(cpu_seconds() - cpu)
            times[name][1].append(time.perf_counter() - wall)
    return times


def report(pipe_name: str, times: dict[str, tuple[list[float], list[float]]]) -> str:
    cpu0, wall0 = (statistics.median(x) for x in times["draft-1"])
    rows = []
    for name, (cpu, wall) in times.items():
        c, w = statistics.median(cpu), statistics.median(wall)
        rows.append([f"{name} ({pipe_name})", f"{c:.3f}", f"{w:.3f}", f"{c / cpu0:.2f}", f"{w / wall0:.2f}"])
    return markdown_table(["row", "CPU s / step", "wall s / step", "CPU / DRaFT-1", "wall / DRaFT-1"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipes", nargs="+", choices=["sd", "sd3"], default=["sd", "sd3"])
    parser.add_argument("--steps", type=int, default=10, help="sampling steps")
    parser.add_argument("--batch", type=int, default=8, help="images per train step (a multiple of 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {cpu_count()} usable core(s), {args.threads} torch "
          f"thread(s), load average {load:.1f}; {args.steps} sampling steps, {args.batch} images per step, "
          f"median of {args.repeats} interleaved steps\n")
    for pipe_name in args.pipes:
        print(report(pipe_name, measure(trainers(pipe_name, args.steps, args.batch), args.repeats)) + "\n")


if __name__ == "__main__":
    main()
