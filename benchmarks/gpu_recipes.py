"""The recipes on a GPU, at their architectures with random weights (configs in code, no download): a few real
trainer steps of SDXL x draft and SD3.5-medium x grpo, seconds per step, peak ``max_memory_allocated`` against
the planner's figure, the reward's share of the step; and the reward's bf16 FLOP rate at batch 256 against a
bf16 matmul in the same run. ``--tiny`` runs the same code on the tiny pipelines on the CPU (the test does).

    PYTHONPATH=. python benchmarks/gpu_recipes.py            # on a GPU
    PYTHONPATH=. python benchmarks/gpu_recipes.py --tiny     # anywhere, seconds
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_planner import PixelReward
from mst_clipiqa.integrations.finetune.trainers import CONFIGS, TRAINERS
from mst_clipiqa.integrations.pipelines import tiny
from mst_clipiqa.integrations.planner import StepSettings, plan
from mst_clipiqa.integrations.planner.architectures import random_pipeline
from mst_clipiqa.integrations.planner.plan import _TowerReward

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CASES = [("sdxl", "draft", "tiny-sdxl"), ("sd35m", "grpo", "tiny-sd3")]
GiB = 1024**3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reward_module(device: torch.device | str, small: bool) -> torch.nn.Module:
    """The paper model's two CLIP towers (random weights); ``small``: the benchmark's pixel critic."""
    with torch.device(device):
        return (PixelReward() if small else _TowerReward()).eval().requires_grad_(False)


class TimedReward(torch.nn.Module):
    """The reward, timing its own forward calls (the reward's share of the step: forward only)."""

    def __init__(self, device: torch.device, small: bool) -> None:
        super().__init__()
        self.inner = reward_module(device, small)
        self.device, self.seconds = device, 0.0

    def forward(self, images: torch.Tensor, prompts: Any = None) -> torch.Tensor:
        sync(self.device)
        start = time.perf_counter()
        out = self.inner(images)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def recipe_config(name: str, method: str, small: bool) -> dict[str, Any]:
    recipe = yaml.safe_load((RECIPES / f"{name}-{method}.yaml").read_text())
    keys = {k.replace("-", "_"): v for k, v in recipe.items() if k not in ("pipeline", "method", "dtype")}
    keys.update(method=method, cpu=not torch.cuda.is_available(), progress_bar=False, max_steps=1000,
                save_every=0, output_dir=None)
    if method in ("grpo", "nft", "dpo"):  # their checkpointing is diffusers' per-block one, as the CLI sets it
        keys["per_block_checkpointing"] = keys.pop("gradient_checkpointing", False)
    if method in ("grpo", "nft"):
        keys["sde_window"] = tuple(keys["sde_window"])
        keys.update(prompts_per_step=1, group_size=keys["batch_size"])  # one micro-batch of rollouts per step
    if small:  # the tiny pipelines: their own size, two steps, no CFG
        keys.update(height=64, width=64, num_inference_steps=2, guidance_scale=1.0, batch_size=2)
        keys.update({"num_steps": 2, "sde_window": (0, 1), "group_size": 2} if method in ("grpo", "nft") else {})
        keys["mixed_precision"] = "no"
    if not small:
        keys.update(encode_kwargs={"max_sequence_length": 256} if name == "sd35m" else {})
    else:
        keys.update(encode_kwargs={"max_sequence_length": 8} if name == "sd35m" else {})
    return keys


def run_recipe(name: str, method: str, tiny_name: str, steps: int, device: torch.device, small: bool) -> dict:
    keys = recipe_config(name, method, small)
    arch = {"sdxl": "sdxl", "sd35m": "sd3.5-medium"}[name]
    if small:
        pipe = getattr(tiny, {"tiny-sdxl": "tiny_sdxl_pipeline", "tiny-sd3": "tiny_sd3_pipeline"}[tiny_name])()
    else:
        pipe = random_pipeline(arch, torch.bfloat16, device)
    if keys.pop("per_block_checkpointing", False):
        (pipe.transformer if hasattr(pipe, "transformer") else pipe.unet).enable_gradient_checkpointing()
    reward = TimedReward(device, small)
    config = CONFIGS[method](**keys)
    trainer = TRAINERS[method](pipe, reward, ["a lighthouse at dusk", "a bowl of fruit"], config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.train_step()  # warm-up (kernels, AdamW state)
    reward.seconds = 0.0
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    settings = StepSettings(batch_size=keys["batch_size"], height=keys["height"], width=keys["width"],
                            num_inference_steps=keys.get("num_steps", keys["num_inference_steps"]),
                            guidance_scale=keys["guidance_scale"], draft_k=keys.get("draft_k", 1),
                            gradient_checkpointing=True,  # every recipe checkpoints
                            encode_kwargs=tuple(keys["encode_kwargs"].items()))
    planned = plan(tiny_name if small else arch, method, settings, dtype="fp32" if small else "bf16",
                   lora_rank=keys["lora_rank"], reward=reward_module("meta", small))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"recipe": f"{name}-{method}", "s_per_step": seconds, "peak_GiB": None if peak is None else peak / GiB,
            "plan_GiB": planned.peak / GiB, "reward_share": reward.seconds / steps / seconds}


def flop_rate(fn: Any, device: torch.device, repeat: int) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return counter.get_total_flops() * repeat / (time.perf_counter() - start)


def reward_rate(device: torch.device, batch: int, repeat: int, small: bool) -> dict[str, float]:
    dtype, side = torch.bfloat16, 64 if small else 4096
    reward = reward_module(device, small).to(dtype)
    with torch.device(device):
        images = torch.rand(batch, 3, 224, 224, dtype=dtype)
        a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    with torch.no_grad():
        ours = flop_rate(lambda: reward(images), device, repeat)
        matmul = flop_rate(lambda: a @ b, device, repeat)
    return {"reward_TFLOPs": ours / 1e12, "matmul_TFLOPs": matmul / 1e12, "ratio": ours / matmul}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny pipelines on the CPU (a check that it runs)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per recipe (after one warm-up)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = [run_recipe(*case, args.steps, device, args.tiny) for case in CASES]
    print(f"device: {card}\n| recipe | s/step | peak GiB (max_memory_allocated) | plan GiB | reward share |")
    print("|---|---|---|---|---|")
    for r in rows:
        peak = "n/a (CPU)" if r["peak_GiB"] is None else f"{r['peak_GiB']:.1f}"
        print(f"| {r['recipe']} | {r['s_per_step']:.2f} | {peak} | {r['plan_GiB']:.2f} | {r['reward_share']:.2f} |")
    rate = reward_rate(device, 2 if args.tiny else 256, 1 if args.tiny else 10, args.tiny)
    print(f"reward bf16 at batch {2 if args.tiny else 256}: {rate['reward_TFLOPs']:.3f} TFLOP/s, bf16 matmul "
          f"{rate['matmul_TFLOPs']:.3f} TFLOP/s, ratio {rate['ratio']:.2f}")
    return rows + [rate]


if __name__ == "__main__":
    main()
