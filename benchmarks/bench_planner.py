"""The planner against the truth: for tiny pipelines (and an SD-Turbo-size one with --sd-turbo), the peak of
the tensors a real trainer step allocates on the CPU (measured with the same allocation tracker, on real
tensors) against the plan traced on meta tensors; then the plan table of the shipped architectures.

    PYTHONPATH=. python benchmarks/bench_planner.py [--sd-turbo] [--table]
"""
from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import torch
from torch import nn

from mst_clipiqa.integrations.finetune.finetuner import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.finetune.policy_gradient import PolicyFinetuneConfig, PolicyTrainer
from mst_clipiqa.integrations.pipelines import tiny
from mst_clipiqa.integrations.planner import ARCHITECTURES, AllocationTracker, StepSettings, plan

GiB = 1024**3


class PixelReward(nn.Module):
    """A small differentiable critic (conv + mean), the same module in the measured and the planned step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, images: torch.Tensor, prompts: Any = None) -> torch.Tensor:
        return self.conv(images).mean(dim=(1, 2, 3))


def _reward(device: str) -> nn.Module:
    with torch.device(device):
        torch.manual_seed(0)
        return PixelReward().eval().requires_grad_(False)


def measured_step(builder: Any, method: str, s: StepSettings) -> int:
    """Bytes at the peak of one real trainer step (fp32, CPU) beyond the weights it started with; ``builder``:
    a tiny builder's name or a function that returns a pipeline."""
    pipe = getattr(tiny, builder)() if isinstance(builder, str) else builder()
    common = dict(num_inference_steps=s.num_inference_steps, max_steps=1, batch_size=s.batch_size, cpu=True,
                  progress_bar=False, height=s.height, width=s.width, encode_kwargs=dict(s.encode_kwargs),
                  mixed_precision="no", lora_rank=4, guidance_scale=s.guidance_scale)
    if method == "draft":
        trainer = RewardFinetuner(pipe, _reward("cpu"), ["a photo"], RewardFinetuneConfig(
            **common, draft_k=s.draft_k, gradient_checkpointing=s.gradient_checkpointing))
    else:
        trainer = PolicyTrainer(pipe, _reward("cpu"), ["a photo"], PolicyFinetuneConfig(
            **common, method=method, num_steps=s.num_inference_steps, group_size=s.batch_size, prompts_per_step=1,
            sde_window=(0, 1)))
    with AllocationTracker() as tracker:
        trainer.train_step()
    return tracker.peak


def planned_step(pipeline: Any, method: str, s: StepSettings) -> int:
    return plan(pipeline, method, s, dtype="fp32", reward=_reward("meta")).step


def _sd_turbo() -> Any:
    from benchmarks.sd_turbo_size import sd_turbo_sized_pipeline

    return sd_turbo_sized_pipeline(torch.device("cpu"), torch.float32)


SD_TURBO = [("sd-turbo-size", _sd_turbo, method, StepSettings(batch_size=1, height=512, width=512,
                                                               num_inference_steps=1, gradient_checkpointing=True))
            for method in ("draft", "grpo")]


CASES = [("tiny", "tiny_sd_pipeline", "draft", StepSettings(batch_size=2, height=64, width=64, num_inference_steps=4)),
         ("tiny", "tiny_sd_pipeline", "grpo", StepSettings(batch_size=2, height=64, width=64, num_inference_steps=4)),
         ("tiny-sd3", "tiny_sd3_pipeline", "draft", StepSettings(batch_size=2, height=64, width=64,
                                                                num_inference_steps=4,
                                                                encode_kwargs=(("max_sequence_length", 8),)))]


def compare(cases=CASES) -> list[dict[str, Any]]:
    rows = []
    for name, builder, method, s in cases:
        start = time.perf_counter()
        truth = measured_step(builder, method, s)
        predicted = planned_step(name if isinstance(builder, str) else builder(), method, s)
        rows.append({"pipeline": name, "method": method, "measured_MiB": truth / 2**20,
                     "planned_MiB": predicted / 2**20, "ratio": predicted / truth,
                     "seconds": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", action="store_true", help="also print the plans of the shipped architectures")
    parser.add_argument("--sd-turbo", action="store_true", help="also compare at SD-Turbo's size (random weights, "
                                                                 "fp32 on the CPU: minutes, ~10 GB of RAM)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print("| pipeline | method | measured step peak (MiB) | planned (MiB) | planned / measured |")
    print("|---|---|---|---|---|")
    for r in compare(CASES + (SD_TURBO if args.sd_turbo else [])):
        print(f"| {r['pipeline']} | {r['method']} | {r['measured_MiB']:.2f} | {r['planned_MiB']:.2f} | "
              f"{r['ratio']:.3f} |")
    if args.table:
        for name in ARCHITECTURES:
            for method in ("draft", "grpo", "dpo"):
                side = 512 if name == "sd1.5" else 1024
                result = plan(name, method, StepSettings(height=side, width=side, num_inference_steps=4,
                                                         gradient_checkpointing=True), gpu_memory=80 * GiB)
                print(result.summary())


if __name__ == "__main__":
    main()
