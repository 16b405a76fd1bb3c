"""The settings of one ``bench_gpu.py`` run: the issue's sizes on a GPU, smaller on a CPU, tiny for --smoke."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch

SECTIONS = ("reward", "highres", "best_of_n", "finetune")


@dataclass(frozen=True)
class GpuPlan:
    """Sizes and repeats; ``paper`` picks the paper architecture (else the tiny model), ``sd15`` the
    SD 1.5-architecture generator (else the tiny SD pipeline)."""

    device: torch.device
    smoke: bool
    paper: bool
    sd15: bool
    batch: int  # the large 224 px batch
    small_batch: int
    hr_batch: int
    hr_size: int
    matmul_n: int
    warmup: int
    repeats: int
    highres_repeats: int  # also best-of-N scoring: cheap rounds whose small differences need more of them
    compile_modes: tuple[str, ...]
    compile_backend: str
    image_size: int  # of the generated images
    steps: int
    n: int
    alignprop_k: int
    train_repeats: int
    sections: tuple[str, ...] = SECTIONS
    dtype: torch.dtype = torch.bfloat16
    guidance: float = 5.0
    train_batch: int = 2
    lora_rank: int = 4

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def profile(self) -> str:
        return "smoke" if self.smoke else "gpu" if self.cuda else "cpu"


def default_plan(device: torch.device, smoke: bool) -> GpuPlan:
    """The issue's table on CUDA; on CPU the same rows with fewer images and steps; tiny models with --smoke."""
    if smoke:
        sizes = dict(paper=False, sd15=False, batch=4, small_batch=2, hr_batch=2, hr_size=256, matmul_n=256,
                     warmup=1, repeats=1, highres_repeats=1, compile_modes=("default",), compile_backend="eager",
                     image_size=32, steps=2, n=2, alignprop_k=2, train_repeats=1)
    elif device.type == "cuda":
        sizes = dict(paper=True, sd15=True, batch=256, small_batch=64, hr_batch=32, hr_size=1024, matmul_n=8192,
                     warmup=2, repeats=10, highres_repeats=10, compile_modes=("default", "reduce-overhead"),
                     compile_backend="inductor", image_size=512, steps=20, n=8, alignprop_k=10, train_repeats=3)
    else:
        sizes = dict(paper=True, sd15=True, batch=8, small_batch=2, hr_batch=4, hr_size=1024, matmul_n=2048,
                     warmup=1, repeats=5, highres_repeats=15, compile_modes=(), compile_backend="inductor",
                     image_size=64, steps=3, n=4, alignprop_k=2, train_repeats=2)
    return GpuPlan(device, smoke, **sizes)


def plan_from_args(args: argparse.Namespace) -> GpuPlan:
    """The device's defaults with the flags given applied."""
    plan = default_plan(torch.device(args.device), args.smoke)
    changes = {name: getattr(args, name) for name in ("batch", "small_batch", "hr_batch", "repeats")
               if getattr(args, name) is not None}
    if args.compile_modes is not None:
        changes["compile_modes"] = tuple(m for m in args.compile_modes.split(",") if m)
    if args.sections:
        unknown = sorted(set(args.sections.split(",")) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
        changes["sections"] = tuple(s for s in SECTIONS if s in args.sections.split(","))
    return replace(plan, **changes)
