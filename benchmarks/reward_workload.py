"""What the reward benchmark runs: its settings, the paper model with random weights, the timed steps and
the memory worker."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.timing import autocast
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, preprocess
from mst_clipiqa.reward.scoring import check_image_values

MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before",
    "vmhwm": ("peak RSS: VmHWM (reset via /proc/self/clear_refs=5) minus VmRSS before the step, fresh process per "
              "config, after one warm-up step; glibc MALLOC_MMAP_THRESHOLD_=65536 so freed tensors go back to the OS"),
    "ru_maxrss": "ru_maxrss minus RSS before the step (peak could not be reset: includes the warm-up step)",
}


@dataclass(frozen=True)
class Plan:
    """The settings of one run: the flags, with the device's defaults filled in."""

    args: argparse.Namespace
    device: torch.device
    threads: int
    batch: int
    warmup: int
    repeats: int
    bf16_repeats: int
    matmul_n: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def quick(self) -> bool:
        return self.args.quick

    @property
    def matmul_seconds(self) -> float:
        """How long one call of the reference matmul should last."""
        return 0.05 if self.cuda else 0.4

    @property
    def worker_threads(self) -> int:
        """The two memory workers run side by side: on CPU each gets half the cores."""
        return self.threads if self.cuda else max(1, self.threads // 2)

    @classmethod
    def from_args(cls, args: argparse.Namespace, threads: int) -> Plan:
        device = torch.device(args.device)
        cuda, quick = device.type == "cuda", args.quick
        repeats = args.repeats or ((10 if quick else 30) if cuda else (3 if quick else 5))
        return cls(args=args, device=device, threads=threads, batch=args.batch or (64 if cuda else 4 if quick else 8),
                   warmup=args.warmup if args.warmup is not None else (3 if cuda else 1), repeats=repeats,
                   bf16_repeats=repeats if cuda else 1 if quick else 2,
                   matmul_n=args.matmul_size or (8192 if cuda else 2048))


def build_model(device: torch.device) -> MSTCLIPIQA:
    """The paper architecture (variant A) with random weights, seed 0."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights were loaded
    try:
        torch.manual_seed(0)
        model = MSTCLIPIQA(MSTCLIPIQAConfig.paper(variant="A", pretrained=False))
    finally:
        root.setLevel(level)
    return model.to(device).eval()


def reward_step(reward: MSTCLIPIQAReward, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Reward forward + gradient w.r.t. the images only (``backward(inputs=...)``, the same work as
    ``autograd.grad``, which FlopCounterMode's module hooks do not support)."""

    def step():
        images.grad = None
        reward(images).sum().backward(inputs=[images])
        return images.grad

    return step


def encoders_step(model: MSTCLIPIQA, pixels_coarse: torch.Tensor, pixels_fine: torch.Tensor,
                  dtype: torch.dtype | None = None) -> Callable[[], torch.Tensor]:
    """The two bare frozen encoders: forward + gradient w.r.t. their normalised input only."""
    inputs = [pixels_coarse] if pixels_fine is pixels_coarse else [pixels_coarse, pixels_fine]

    def step():
        with autocast(pixels_coarse.device, dtype):
            f_coarse = model.coarse.encode_image(pixels_coarse)
            f_fine = model.fine.encode_image(pixels_fine)
        for x in inputs:
            x.grad = None
        (f_coarse.sum() + f_fine.sum()).backward(inputs=inputs)
        return pixels_coarse.grad

    return step


@dataclass
class Workload:
    """Random 224 px images, the reward on them and the two steps timed side by side."""

    model: MSTCLIPIQA
    reward: MSTCLIPIQAReward
    images: torch.Tensor
    pixels: torch.Tensor  # the images preprocessed for the coarse encoder
    steps: dict[str, Callable[[], torch.Tensor]]


def make_workload(model: MSTCLIPIQA, batch: int, device: torch.device) -> Workload:
    torch.manual_seed(0)
    images = torch.rand(batch, 3, 224, 224, device=device, requires_grad=True)
    spec_c, spec_f = model.coarse.image_spec, model.fine.image_spec
    pixels_c = preprocess(images.detach(), spec_c).clone().requires_grad_(True)
    pixels_f = pixels_c if spec_f == spec_c else preprocess(images.detach(), spec_f).clone().requires_grad_(True)
    reward = MSTCLIPIQAReward(model)
    steps = {"reward": reward_step(reward, images), "encoders": encoders_step(model, pixels_c, pixels_f)}
    return Workload(model, reward, images, pixels_c, steps)


def own_work_steps(work: Workload) -> dict[str, Callable]:
    """The reward's work around the encoders, each part timed alone: input checks, preprocessing
    (fwd+bwd to the images), and fusion + heads (fwd+bwd to the two stream embeddings)."""
    reward, model, images = work.reward, work.model, work.images
    with torch.no_grad():
        f_c = model.coarse.encode_image(work.pixels[:1]).expand(len(images), -1).clone().requires_grad_(True)
        f_f = model.fine.encode_image(work.pixels[:1]).expand(len(images), -1).clone().requires_grad_(True)

    def checks():
        check_image_values(images, reward.input_range, reward.tolerance)

    def prep():
        images.grad = None
        x_c = preprocess(images, model.coarse.image_spec)
        x_f = x_c if model.fine.image_spec == model.coarse.image_spec else preprocess(images, model.fine.image_spec)
        (x_c.sum() + (x_f.sum() if x_f is not x_c else 0)).backward(inputs=[images])

    def heads():
        scores = model.score_features(f_c, f_f)
        sum(s.sum() for s in scores.values()).backward(inputs=[f_c, f_f])

    return {"input checks": checks, "preprocess": prep, "fusion + heads": heads}


def memory_worker(mode: str, device: torch.device, batch: int, size: int) -> dict:
    """One fresh process: peak memory of one reward forward+backward above the state after building."""
    reward = MSTCLIPIQAReward(build_model(device), gradient_checkpointing=(mode == "ckpt"))
    torch.manual_seed(1)
    images = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    step = reward_step(reward, images)
    step()  # warm-up: one-time allocations (kernel caches, thread pools) are not the step's memory
    with PeakMemory(device) as mem:
        grad = step()
    return {"mode": mode, "peak_bytes": mem.peak_bytes, "baseline_bytes": mem.baseline_bytes,
            "method": MEMORY_METHODS[mem.method], "grad_norm": float(grad.norm())}
