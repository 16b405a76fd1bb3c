"""Does every generator trainer learn? Held-out reward gain per 1,000 training samples and per CPU-second, over
seeds, for every trainer on the tiny pipelines, with trl 0.23.1's ``DDPOTrainer`` on the same problem as ours.

    python benchmarks/bench_learning.py                          # every row, seeds 0 1 2 (about 6 CPU-minutes)
    python benchmarks/bench_learning.py --seeds 0 1 2 3 4 --rows ddpo "trl ddpo"
    python benchmarks/bench_learning.py --smoke                  # 2 seeds, 2 steps each: every row runs

The problem every row solves: raise the mean brightness of the images (a reward DRaFT raises easily, and whose
gradient the policy-gradient methods never see) on 4 training prompts; the gain is judged on 2 held-out prompts x
8 held-out seeds, by the trainer's own ``evaluate`` before and after training (paired sample by sample: the same
seeds draw the same noise). Each (row, seed) is one training run from a fresh pipeline whose LoRA, prompts and
noise come from the seed; the table gives the mean +- standard error of the per-seed gains ACROSS seeds. Rows run
round-robin by seed in one process on ``--threads`` torch threads (``benchmarks.harness.seeds``); "CPU s" is the
process time of training alone (no evaluation), "wall s" the same interval on the clock.

Rows: ``draft`` / ``alignprop`` / ``refl`` (``RewardFinetuner``), ``dpo`` (``preference_pairs`` best-worst pairs
from as many samples, then ``DPOTrainer``), ``ddpo`` / ``grpo`` on the tiny SD pipeline and ``grpo`` / ``nft`` on
the tiny SD3 pipeline (``PolicyTrainer``; ddpo and grpo on SD3 once more with the SDE on the first 2 of 4 steps,
MixGRPO / Flow-GRPO-Fast's cheaper update, which for DDIM also leaves out the two steps of standard deviation 0.04
and 0.02 whose gradient terms are mostly noise), and ``trl ddpo`` (trl's ``DDPOTrainer``, evaluated by our sampler).
The DDPO rows sample with guidance 2 (trl 0.23.1 cannot sample at guidance 1 with diffusers 0.3x+: it
concatenates negative embeddings without guidance) and batch-normalised advantages, clip range 1e-4, the same
LoRA, learning rate and samples per epoch, on the tiny SD pipeline as built (trl loads it from disk). The other
UNet rows use it with an invertible linear autoencoder, so DPO's training on encoded images is about the images
the pipeline makes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.harness.machine import cpu_count, cpu_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from benchmarks.harness.seeds import across_seeds, fmt_mean_se, run_interleaved  # noqa: E402

PROMPTS = ["a cat", "a dog", "a red car", "a tree"]
HELD_OUT_PROMPTS = ["a house", "a boat"]
HELD_OUT_SEEDS = range(1000, 1008)
STEPS = 4  # sampling steps of every row


def brightness(images: torch.Tensor) -> torch.Tensor:
    """The reward: mean pixel value per image (differentiable; the policy methods score it without gradients)."""
    return images.float().mean(dim=(1, 2, 3))


def numpy_brightness(images: torch.Tensor):
    return brightness(images.detach()).cpu().numpy()


def held_out() -> tuple[list[str], list[int]]:
    pairs = [(p, s) for p in HELD_OUT_PROMPTS for s in HELD_OUT_SEEDS]
    return [p for p, _ in pairs], [s for _, s in pairs]


@dataclass
class Row:
    """One trainer's settings: ``kind`` picks the runner; ``steps`` optimizer steps (policy: rounds of rollouts)."""

    kind: str
    steps: int
    lr: float
    settings: dict = field(default_factory=dict)


def default_rows() -> dict[str, Row]:
    policy = {"group_size": 4, "prompts_per_step": 4}
    ddpo = {"method": "ddpo", "per_prompt_stats": False, "group_size": 1, "prompts_per_step": 16,
            "guidance_scale": 2.0}
    return {
        "draft": Row("finetuner", 16, 1e-2, {"method": "draft"}),
        "alignprop": Row("finetuner", 16, 1e-2, {"method": "alignprop"}),
        "refl": Row("finetuner", 16, 1e-2, {"method": "refl", "refl_window": 2}),
        "dpo": Row("dpo", 16, 2e-3, {"n": 16}),
        "ddpo": Row("policy", 8, 1e-2, {**ddpo, "pipe": "sd-kl"}),
        "ddpo (SDE window 0-2)": Row("policy", 8, 1e-2, {**ddpo, "pipe": "sd-kl", "sde_window": (0, 2)}),
        "trl ddpo": Row("trl", 8, 1e-2, {**ddpo, "pipe": "sd-kl"}),
        "grpo (UNet)": Row("policy", 8, 1e-2, {"method": "grpo", "pipe": "sd", **policy}),
        "grpo (SD3)": Row("policy", 8, 3e-2, {"method": "grpo", "pipe": "sd3", **policy}),
        "grpo (SD3, SDE window 0-2)": Row("policy", 8, 3e-2, {"method": "grpo", "pipe": "sd3", "sde_window": (0, 2),
                                                              **policy}),
        "nft (SD3)": Row("policy", 8, 1e-2, {"method": "nft", "pipe": "sd3", **policy}),
    }


def _pipe(name: str = "sd"):
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline
    from mst_clipiqa.integrations.pipelines.tiny_autoencoder import with_linear_autoencoder

    if name == "sd3":
        return tiny_sd3_pipeline()
    return tiny_sd_pipeline() if name == "sd-kl" else with_linear_autoencoder(tiny_sd_pipeline())


def _train(trainer, steps: int) -> tuple[float, float]:
    """CPU and wall seconds of ``steps`` train steps."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return time.process_time() - cpu, time.perf_counter() - wall


def _gain(evaluate: Callable[[], torch.Tensor], train: Callable[[], tuple[float, float]], samples: int) -> dict:
    before = evaluate()
    cpu, wall = train()
    gain = float((evaluate() - before).mean())
    return {"gain": gain, "samples": samples, "train_cpu_s": cpu, "train_wall_s": wall}


def run_finetuner(row: Row, seed: int) -> dict:
    from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig

    batch = 4
    config = RewardFinetuneConfig(num_inference_steps=STEPS, **row.settings,
                                  run=RunConfig(batch_size=batch, max_steps=row.steps, learning_rate=row.lr,
                                                progress_bar=False, cpu=True, seed=seed))
    trainer = RewardFinetuner(_pipe(), brightness, PROMPTS, config)
    return _gain(lambda: trainer.evaluate(*held_out()), lambda: _train(trainer, row.steps), row.steps * batch)


def run_dpo(row: Row, seed: int, work: Path) -> dict:
    """Best-worst pairs from ``n`` samples per training prompt, then DPOTrainer; the pairs' sampling counts as
    training cost (its samples are the row's samples)."""
    from mst_clipiqa.integrations import DPOConfig, DPOTrainer, RunConfig, preference_pairs

    batch, n, pairs = 4, row.settings["n"], work / f"pairs-{seed}"
    cpu, wall = time.process_time(), time.perf_counter()
    preference_pairs(_pipe(), PROMPTS, brightness, pairs, n=n, pairs="best-worst", progress=False, seed=seed,
                     num_inference_steps=STEPS, guidance_scale=1.0)
    pairs_cpu, pairs_wall = time.process_time() - cpu, time.perf_counter() - wall
    config = DPOConfig(num_inference_steps=STEPS,
                       run=RunConfig(batch_size=batch, max_steps=row.steps, learning_rate=row.lr, progress_bar=False,
                                     cpu=True, seed=seed))
    trainer = DPOTrainer(_pipe(), pairs, config, reward=brightness)
    out = _gain(lambda: trainer.evaluate(*held_out()), lambda: _train(trainer, row.steps), n * len(PROMPTS))
    return {**out, "train_cpu_s": out["train_cpu_s"] + pairs_cpu, "train_wall_s": out["train_wall_s"] + pairs_wall}


def run_policy(row: Row, seed: int) -> dict:
    from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer, RunConfig

    settings = dict(row.settings)
    pipe = _pipe(settings.pop("pipe"))
    settings.setdefault("guidance_scale", 1.0)
    config = PolicyFinetuneConfig(num_inference_steps=STEPS, **settings,
                                  run=RunConfig(learning_rate=row.lr, max_steps=row.steps, progress_bar=False,
                                                seed=seed))
    trainer = PolicyTrainer(pipe, brightness, PROMPTS, config)
    return _gain(lambda: trainer.evaluate(*held_out()), lambda: _train(trainer, row.steps),
                 row.steps * config.rollouts_per_step)


def run_trl(row: Row, seed: int, saved: str, work: Path) -> dict:
    """trl 0.23.1's DDPOTrainer with the ``ddpo`` row's settings, evaluated by our sampler."""
    try:
        from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline
    except ImportError as error:
        return {"skipped": f"trl's DDPOTrainer does not import here ({error}); pip install trl==0.23.1"}
    from accelerate import PartialState

    from mst_clipiqa.integrations import ddpo_reward_fn
    from mst_clipiqa.integrations.pipelines.stochastic import StochasticSampler

    os.environ.setdefault("TQDM_DISABLE", "1")  # trl's per-step progress bars
    PartialState()  # trl's pipeline logs through accelerate before its trainer builds the Accelerator
    batch, guidance = row.settings["prompts_per_step"], row.settings["guidance_scale"]
    config = DDPOConfig(num_epochs=row.steps, sample_batch_size=batch, sample_num_batches_per_epoch=1,
                        train_batch_size=batch, sample_num_steps=STEPS, sample_eta=1.0,
                        sample_guidance_scale=guidance, train_learning_rate=row.lr, train_clip_range=1e-4,
                        train_adv_clip_max=5.0, per_prompt_stat_tracking=False, mixed_precision="no",
                        train_max_grad_norm=1.0, allow_tf32=False, log_with=None, seed=seed, save_freq=10**9,
                        project_kwargs={"project_dir": str(work / f"trl-{seed}")})
    pipeline = DefaultDDPOStableDiffusionPipeline(saved, use_lora=True)
    generator = torch.Generator().manual_seed(seed)

    def prompt_fn():
        return PROMPTS[int(torch.randint(len(PROMPTS), (1,), generator=generator))], {}

    trainer = DDPOTrainer(config, ddpo_reward_fn(numpy_brightness), prompt_fn, pipeline)
    pipe, unet = pipeline.sd_pipeline, pipeline.sd_pipeline.unet
    sampler = StochasticSampler(pipe, num_steps=STEPS, guidance_scale=guidance)

    def evaluate() -> torch.Tensor:
        with torch.no_grad():
            return brightness(sampler.rollout(unet, *held_out()).images)

    def train() -> tuple[float, float]:
        cpu, wall, step = time.process_time(), time.perf_counter(), 0
        for epoch in range(row.steps):
            step = trainer.step(epoch, step)
        return time.process_time() - cpu, time.perf_counter() - wall

    return _gain(evaluate, train, row.steps * batch)


def rows_for(names: list[str], rows: dict[str, Row], work: Path, saved: str) -> dict[str, Callable[[int], dict]]:
    runners = {"finetuner": run_finetuner, "policy": run_policy,
               "dpo": lambda row, seed: run_dpo(row, seed, work),
               "trl": lambda row, seed: run_trl(row, seed, saved, work)}
    return {name: (lambda seed, row=rows[name]: runners[row.kind](row, seed)) for name in names}


def summary(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Per row: mean and standard error across seeds of the gain, per 1,000 samples and per CPU-second."""
    out = {}
    for name, runs in results.items():
        if any("skipped" in r for r in runs):
            out[name] = {"skipped": runs[0]["skipped"]}
            continue
        out[name] = {"seeds": [r["seed"] for r in runs], "samples": runs[0]["samples"],
                     "gain": across_seeds(runs, "gain"),
                     "per_1k": across_seeds(runs, lambda r: 1000 * r["gain"] / r["samples"]),
                     "per_cpu_s": across_seeds(runs, lambda r: r["gain"] / r["train_cpu_s"]),
                     "cpu_s": across_seeds(runs, "train_cpu_s")[0], "wall_s": across_seeds(runs, "train_wall_s")[0]}
    return out


def report(summaries: dict[str, dict]) -> str:
    header = ["trainer", "samples / seed", "held-out gain per 1k samples (mean +- s.e. over seeds)",
              "gain per CPU-s", "train CPU s", "train wall s"]
    rows = []
    for name, s in summaries.items():
        if "skipped" in s:
            rows.append([name, "skipped", s["skipped"], "", "", ""])
            continue
        rows.append([name, str(s["samples"]), fmt_mean_se(*s["per_1k"]), fmt_mean_se(*s["per_cpu_s"]),
                     f"{s['cpu_s']:.1f}", f"{s['wall_s']:.1f}"])
    ours, trl = summaries.get("ddpo"), summaries.get("trl ddpo")
    if ours and trl and "skipped" not in trl and "skipped" not in ours:
        rows.append(["ddpo / trl ddpo (this run)", "", f"{ours['per_1k'][0] / trl['per_1k'][0]:.3g}"
                     if trl["per_1k"][0] else "trl gained 0", "", f"{ours['cpu_s'] / trl['cpu_s']:.3g}",
                     f"{ours['wall_s'] / trl['wall_s']:.3g}"])
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rows = default_rows()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(rows), default=list(rows), metavar="ROW",
                        help=f"rows to run (default: all of {', '.join(rows)})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write every seed's result and the summary here")
    parser.add_argument("--smoke", action="store_true", help="seeds 0 and 1, 2 steps of 4 samples: every row runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = [0, 1]
        for row in rows.values():
            row.steps = 2
            smaller = {"dpo": {"n": 2}, "policy": {"group_size": min(row.settings.get("group_size", 1), 2),
                                                    "prompts_per_step": 4 // min(row.settings.get("group_size", 1), 2)}}
            row.settings = {**row.settings, **smaller.get("policy" if row.kind == "trl" else row.kind, {})}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        saved = str(Path(tmp) / "tiny-sd")
        _pipe("sd-kl").save_pretrained(saved)
        results = run_interleaved(rows_for(args.rows, rows, Path(tmp), saved), args.seeds,
                                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    summaries = summary(results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {cpu_count()} usable core(s), {args.threads} torch "
          f"thread(s), load average {load:.1f}; seeds {args.seeds}; {STEPS} sampling steps; held-out "
          f"{len(HELD_OUT_PROMPTS)} prompts x {len(HELD_OUT_SEEDS)} seeds\n")
    print(report(summaries))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "summary": summaries}, indent=1))
    return summaries


if __name__ == "__main__":
    main()
