#!/usr/bin/env python
"""Does an option against reward hacking keep a held-out judge's score? GRPO trained on scorer A, judged by B.

    python benchmarks/bench_reward_hacking.py [--seeds 0,1,2] [--steps 8] [--smoke]

The policy (a tiny SD3 pipeline, LoRA) is trained by ``PolicyTrainer`` (grpo, groups of 4, 2 prompts per step)
against scorer A: a tiny MST-CLIPIQA model with two outputs (quality, correspondence), both in the objective.
Scorer B is held out: another tiny MST-CLIPIQA model (other random weights), never trained against. Methods,
all on the same objective, interleaved within each seed (the pipeline, LoRA and data order depend on the seed
alone, so the comparison is paired):

- ``plain``: grpo, no KL;
- ``kl``: grpo with ``kl_coeff`` 0.01;
- ``uncertainty``: grpo, KL 0.01 weighted by A's sigma per sample (GARDO-style, ``uncertainty="kl"``);
- ``gdpo``: grpo with each of A's two outputs normalised within its group before the sum (GDPO).

Per method: the gain in A's objective and the change in B's score on fixed held-out prompts and seeds (after
minus before, mean over the held-out samples), then mean ± standard error over seeds, and each method's
difference to ``plain`` (paired by seed). CPU and wall time.

With tiny random scorers and a tiny random pipeline the numbers show how the options change what the policy
does to A and to B on one budget, not whether they prevent reward hacking of a real model.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import cpu_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer, RunConfig  # noqa: E402
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline  # noqa: E402
from mst_clipiqa.integrations.rewards import NamedScores  # noqa: E402
from mst_clipiqa.reward import MSTCLIPIQAReward  # noqa: E402

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
HELD_OUT = (["a purple circle", "an orange square"] * 4, list(range(1000, 1008)))
METHODS = {"plain": {}, "kl": {"kl_coeff": 0.01}, "uncertainty": {"kl_coeff": 0.01, "uncertainty": "kl"},
           "gdpo": {"reward_aggregation": "gdpo"}}


def run(method: str, seed: int, args: argparse.Namespace, judge: MSTCLIPIQAReward, work: Path) -> tuple[float, float]:
    scorer = NamedScores(MSTCLIPIQAReward.from_pretrained("tiny", outputs=["quality", "correspondence"], seed=0))
    config = PolicyFinetuneConfig(method="grpo", num_inference_steps=3, guidance_scale=1.0, group_size=4,
                                  prompts_per_step=2, **METHODS[method],
                                  run=RunConfig(learning_rate=args.lr, max_steps=args.steps, seed=seed,
                                                progress_bar=False, output_dir=str(work / f"{method}-{seed}")))
    trainer = PolicyTrainer(tiny_sd3_pipeline(seed=seed), scorer, PROMPTS, config)
    prompts, seeds = HELD_OUT

    def measure() -> tuple[float, float]:
        images = trainer.sample(prompts, seeds)
        with torch.no_grad():
            return float(trainer.policy.score(images, prompts)[0].mean()), float(judge(images, prompts).mean())

    a0, b0 = measure()
    for _ in range(args.steps):
        trainer.train_step()
    a1, b1 = measure()
    return a1 - a0, b1 - b0


def _mean_se(values: list[float]) -> str:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):+.4f} ± {se:.4f}"


def main(argv: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    """Print the table; return each method's (gain in A, change in B) per seed."""
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--smoke", action="store_true", help="1 seed, 1 step: checks that every method runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.steps = "0", 1
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    judge = MSTCLIPIQAReward.from_pretrained("tiny", seed=1234)
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:
            order = list(METHODS) if seed % 2 == 0 else list(reversed(METHODS))  # interleaved, order alternating
            for method in order:
                results[method].append(run(method, seed, args, judge, Path(work)))
    rows = []
    for method, pairs in results.items():
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        da = [x - y[0] for x, y in zip(a, results["plain"])]
        db = [x - y[1] for x, y in zip(b, results["plain"])]
        rows.append([method, _mean_se(a), _mean_se(b), _mean_se(da) if method != "plain" else "-",
                     _mean_se(db) if method != "plain" else "-"])
    print(f"grpo on tiny SD3, {args.steps} steps, lr {args.lr}, seeds {seeds}; {cpu_name()}, 1 thread")
    print(markdown_table(["method", "gain in A (trained)", "change in B (held out)", "A: minus plain",
                          "B: minus plain"], rows))
    print(f"wall {time.perf_counter() - wall:.1f} s, CPU {time.process_time() - cpu:.1f} s")
    return results


if __name__ == "__main__":
    main()
