"""What every LoRA trainer of the denoiser sets up and writes alike: frozen pipeline on the device, the LoRA
and AdamW, the schedule and the EMA; sample grids on fixed prompts and seeds; the saved LoRA."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reward.utils import precision_dtype

from ..inference.grid import image_grid
from ..pipelines.lora import add_lora, lora_parameters, save_lora
from .base import lr_schedule
from .ema import LoraEMA
from .tracking import log_grid

__all__ = ["setup_lora_training", "save_sample_grid", "evaluation_weights", "save_trainer_lora"]


def setup_lora_training(trainer: Any) -> None:
    """Freeze ``trainer.pipe`` and its rewards, place them, give the family's denoiser a LoRA and set the
    trainer's ``lora_config``, ``params``, ``optimizer``, ``lr_scheduler``, ``model`` (prepared) and ``ema``."""
    config, acc = trainer.config, trainer.accelerator
    weight_dtype = precision_dtype(acc.mixed_precision) or torch.float32
    for module in trainer.pipe.components.values():
        if isinstance(module, nn.Module):
            module.requires_grad_(False)
    trainer.pipe.to(acc.device)
    if weight_dtype != torch.float32:  # frozen weights in half precision; LoRA cast back to fp32 below
        trainer.pipe.to(dtype=weight_dtype)
    for fn in trainer.reward.values() if isinstance(trainer.reward, Mapping) else [trainer.reward]:
        if isinstance(fn, nn.Module):
            # A fixed critic: its parameters must neither train nor pile up gradients nobody zeroes.
            fn.requires_grad_(False).eval().to(acc.device)
    denoiser = trainer.family.denoiser
    trainer.lora_config = add_lora(denoiser, config.lora_rank, config.lora_alpha, config.lora_target_modules,
                                   seed=config.seed)
    params = lora_parameters(denoiser)
    for p in params:  # LoRA weights stay fp32 under fp16/bf16 mixed precision
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    # Stepped once per optimizer step by the trainer, not by accelerate (which steps it once per process).
    trainer.lr_scheduler = lr_schedule(config, optimizer)
    trainer.model, trainer.optimizer = acc.prepare(denoiser, optimizer)
    trainer.params = params
    trainer.ema = LoraEMA(params, config.ema_decay) if config.use_ema else None


def save_sample_grid(trainer: Any, sample: Callable[[Sequence[str], Sequence[int]], torch.Tensor],
                     first: bool = False) -> None:
    """Save (and log) a grid of ``sample_prompts`` x ``sample_seeds`` every ``sample_every`` steps and before
    the first, on the main process."""
    cfg = trainer.config
    due = cfg.sample_every and (first or trainer.global_step % cfg.sample_every == 0)
    if not due or trainer.run_dir is None or not trainer.accelerator.is_main_process:
        return
    prompts = [p for p in cfg.sample_prompts for _ in cfg.sample_seeds]
    seeds = [s for _ in cfg.sample_prompts for s in cfg.sample_seeds]
    grid = image_grid(list(sample(prompts, seeds)), columns=len(cfg.sample_seeds))
    path = trainer.run_dir / "samples" / f"step_{trainer.global_step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    log_grid(trainer.accelerator, "samples", grid, trainer.global_step)


def evaluation_weights(ema: LoraEMA | None) -> Any:
    """The EMA weights inside the block when there is one."""
    return ema.applied() if ema is not None else nullcontext()


def save_trainer_lora(trainer: Any, directory: str | Path) -> Path:
    """Save the trainer's LoRA (the EMA weights when on) in diffusers format for ``pipe.load_lora_weights``."""
    with evaluation_weights(trainer.ema):
        return save_lora(trainer.pipe, trainer.unwrapped, directory, trainer.family.denoiser_name)
