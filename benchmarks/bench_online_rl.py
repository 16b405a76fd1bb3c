"""Online RL of the generator: our DDPO against trl 0.23.1's ``DDPOTrainer``, and GRPO with a short SDE window
against full-trajectory GRPO and DiffusionNFT.

    python benchmarks/bench_online_rl.py            # CPU, tiny pipelines, prints both tables
    python benchmarks/bench_online_rl.py --smoke    # 2 epochs each: checks that every row runs

(a) ``ddpo`` (``PolicyTrainer``) and trl's ``DDPOTrainer`` on the same tiny SD pipeline saved to disk, the same
numpy brightness reward (trl gets it through ``ddpo_reward_fn``), DDIM steps, eta, samples per epoch, LoRA
(rank 4 on to_q/k/v/out.0), learning rate, clip range and batch-normalised advantages. (b) ``grpo`` with the
SDE on the first 2 steps of 6, ``grpo`` on all 6, and ``nft`` on a tiny SD3 pipeline, groups of 4.

Reward gain: the mean reward of the trained policy minus the initial one on fixed held-out prompts and seeds
(the same DDIM / SDE sampler with the same seeds, so the difference is paired sample by sample; trl's LoRA U-Net
is evaluated by our sampler too), divided by the training samples (per 1,000) or the training seconds.
Seconds per epoch: the median over the epochs after the first (rollouts, rewards and updates). Each row runs
in its own process, one after another, on ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import cpu_count, cpu_name  # noqa: E402
from benchmarks.harness.memory import emit_result, run_workers  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402

PROMPTS = ["a cat", "a dog", "a red car", "a tree"]
HELD_OUT = ["a house", "a boat"]


def brightness(images):
    return images.detach().float().cpu().numpy().mean(axis=(1, 2, 3))


def _held_out(spec: dict) -> tuple[list[str], list[int]]:
    n = spec["eval"]
    return [HELD_OUT[i % 2] for i in range(n)], list(range(1000, 1000 + n))


def _evaluate(pipe, model, spec: dict, **sampler) -> list[float]:
    """Each held-out sample's reward with our sampler and the model's current weights."""
    import torch

    from mst_clipiqa.integrations.pipelines.stochastic import StochasticSampler

    prompts, seeds = _held_out(spec)
    sampler = StochasticSampler(pipe, num_steps=spec["steps"], guidance_scale=spec["guidance"], **sampler)
    with torch.no_grad():
        images = sampler.rollout(model, prompts, seeds).images
    return brightness(images).tolist()


def _result(before: list[float], after: list[float], times: list[float], samples: int) -> dict:
    gains = [a - b for a, b in zip(after, before)]
    gain = statistics.fmean(gains)
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else 0.0
    train_s = sum(times)
    return {"epoch_s": statistics.median(times[1:] or times), "gain": gain, "gain_se": se, "samples": samples,
            "train_s": train_s, "gain_per_1k": 1000 * gain / samples, "gain_per_s": gain / train_s}


def ours(spec: dict) -> dict:
    """One of our trainers (``spec["config"]``: PolicyFinetuneConfig fields) on a tiny pipeline."""
    import torch

    torch.set_num_threads(spec["threads"])
    from diffusers import DiffusionPipeline

    from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer
    from mst_clipiqa.integrations.finetune.config import from_flat_settings
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline

    pipe = DiffusionPipeline.from_pretrained(spec["saved"]) if spec.get("saved") else tiny_sd3_pipeline()
    config = from_flat_settings(PolicyFinetuneConfig, {
        "num_inference_steps": spec["steps"], "guidance_scale": spec["guidance"], "learning_rate": spec["lr"],
        "max_steps": spec["epochs"], "progress_bar": False, "seed": 0, **spec["config"]})
    trainer = PolicyTrainer(pipe, brightness, PROMPTS, config)
    before = trainer.evaluate(*_held_out(spec)).tolist()
    times = []
    for _ in range(spec["epochs"]):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    after = trainer.evaluate(*_held_out(spec)).tolist()
    return _result(before, after, times, spec["epochs"] * config.rollouts_per_step)


def trl_ddpo(spec: dict) -> dict:
    """trl 0.23.1's DDPOTrainer on the saved tiny pipeline with the same settings."""
    import torch

    torch.set_num_threads(spec["threads"])
    try:
        from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline
    except ImportError as error:
        return {"skipped": f"trl's DDPOTrainer does not import here ({error}); pip install trl==0.23.1"}
    from accelerate import PartialState

    from mst_clipiqa.integrations import ddpo_reward_fn

    PartialState()  # trl's pipeline logs through accelerate before its trainer builds the Accelerator
    batch = spec["config"]["prompts_per_step"]
    config = DDPOConfig(num_epochs=spec["epochs"], sample_batch_size=batch, sample_num_batches_per_epoch=1,
                        train_batch_size=batch, sample_num_steps=spec["steps"], sample_eta=1.0,
                        sample_guidance_scale=spec["guidance"], train_learning_rate=spec["lr"], train_clip_range=1e-4,
                        train_adv_clip_max=5.0, per_prompt_stat_tracking=False, mixed_precision="no",
                        train_max_grad_norm=1.0, allow_tf32=False, log_with=None, seed=0, save_freq=10**9,
                        project_kwargs={"project_dir": spec["project_dir"]})
    pipeline = DefaultDDPOStableDiffusionPipeline(spec["saved"], use_lora=True)
    generator = torch.Generator().manual_seed(0)

    def prompt_fn():
        return PROMPTS[int(torch.randint(len(PROMPTS), (1,), generator=generator))], {}

    trainer = DDPOTrainer(config, ddpo_reward_fn(brightness), prompt_fn, pipeline)
    pipe, unet = pipeline.sd_pipeline, pipeline.sd_pipeline.unet
    before = _evaluate(pipe, unet, spec)
    times, step = [], 0
    for epoch in range(spec["epochs"]):
        start = time.perf_counter()
        step = trainer.step(epoch, step)
        times.append(time.perf_counter() - start)
    after = _evaluate(pipe, unet, spec)
    return _result(before, after, times, spec["epochs"] * batch)


def _rows(args: argparse.Namespace, saved: str, project_dir: str) -> dict[str, dict]:
    base = {"threads": args.threads, "eval": args.eval, "epochs": args.epochs, "lr": args.lr}
    ddpo = {"method": "ddpo", "per_prompt_stats": False, "group_size": 1, "prompts_per_step": args.batch}
    # trl 0.23.1 passes negative embeddings to diffusers' _encode_prompt, which (0.42) concatenates them even
    # without guidance: its sampling fails at guidance 1, so both DDPO rows sample with guidance 2.
    sd = {**base, "steps": args.steps, "saved": saved, "guidance": 2.0}
    sd3 = {**base, "steps": args.flow_steps, "lr": args.flow_lr, "guidance": 1.0}
    group = {"group_size": 4, "prompts_per_step": 2}
    return {
        "ours: ddpo (PolicyTrainer)": {"fn": "ours", **sd, "config": ddpo},
        "trl 0.23.1: DDPOTrainer": {"fn": "trl_ddpo", **sd, "config": ddpo, "project_dir": project_dir},
        "grpo, SDE window 0-2": {"fn": "ours", **sd3, "config": {"method": "grpo", "sde_window": (0, 2), **group}},
        "grpo, full trajectory": {"fn": "ours", **sd3, "config": {"method": "grpo", **group}},
        "nft": {"fn": "ours", **sd3, "config": {"method": "nft", **group}},
    }


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def report(results: dict[str, dict]) -> str:
    lines = []
    a, b = results["ours: ddpo (PolicyTrainer)"], results["trl 0.23.1: DDPOTrainer"]
    header = ["trainer", "s / epoch", "held-out gain (+- s.e.)", "gain / 1k samples"]
    rows = [[name, _fmt(r["epoch_s"]), f"{r['gain']:.2e} +- {r['gain_se']:.1e}", f"{r['gain_per_1k']:.2e}"]
            for name, r in (("ours: ddpo", a), ("trl 0.23.1: DDPOTrainer", b)) if "skipped" not in r]
    if "skipped" in b:
        rows.append(["trl 0.23.1: DDPOTrainer", "skipped", b["skipped"], ""])
    else:
        rows.append(["ours / trl", _fmt(a["epoch_s"] / b["epoch_s"]), "",
                     _fmt(a["gain_per_1k"] / b["gain_per_1k"]) if b["gain_per_1k"] else "trl gained 0"])
    lines += ["(a) DDPO, tiny SD pipeline", markdown_table(header, rows), ""]
    ref = results["grpo, full trajectory"]
    header = ["method", "s / epoch", "held-out gain (+- s.e.)", "gain / 1k samples", "gain / s", "x full (1k)",
              "x full (s)"]
    rows = []
    for name in ("grpo, SDE window 0-2", "grpo, full trajectory", "nft"):
        r = results[name]
        rows.append([name, _fmt(r["epoch_s"]), f"{r['gain']:.2e} +- {r['gain_se']:.1e}", f"{r['gain_per_1k']:.2e}",
                     f"{r['gain_per_s']:.2e}", _fmt(r["gain_per_1k"] / ref["gain_per_1k"]) if ref["gain"] else "-",
                     _fmt(r["gain_per_s"] / ref["gain_per_s"]) if ref["gain"] else "-"])
    lines += ["(b) GRPO's SDE window against full-trajectory GRPO and NFT, tiny SD3 pipeline",
              markdown_table(header, rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="DDPO samples per epoch")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps (SD)")
    parser.add_argument("--flow-steps", type=int, default=6, help="sampling steps (SD3)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--flow-lr", type=float, default=3e-2)
    parser.add_argument("--eval", type=int, default=16, help="held-out samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="2 epochs of 2 samples: every row runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        emit_result({"ours": ours, "trl_ddpo": trl_ddpo}[spec["fn"]](spec))
        return {}
    if args.smoke:
        args.epochs, args.batch, args.steps, args.flow_steps, args.eval = 2, 2, 2, 3, 2
    import tempfile

    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        saved = str(Path(tmp) / "tiny-sd")
        tiny_sd_pipeline().save_pretrained(saved)
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
        specs = _rows(args, saved, str(Path(tmp) / "trl"))
        if args.smoke:
            for spec in specs.values():
                spec["config"] = {**spec["config"], "group_size": min(spec["config"]["group_size"], 2),
                                  "prompts_per_step": min(spec["config"]["prompts_per_step"], 2)}
        results = run_workers(__file__, {name: ["--worker", json.dumps(spec)] for name, spec in specs.items()}, env,
                              parallel=False, cwd=ROOT)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {cpu_count()} usable core(s), {args.threads} torch "
          f"thread(s), load average {load:.1f}; {args.epochs} epochs, held-out set of {args.eval} samples\n")
    print(report(results))
    return results


if __name__ == "__main__":
    main()
