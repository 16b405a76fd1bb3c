"""Everything a fine-tuning run needs to continue bit for bit: what a checkpoint captures and restores, and
how a run folder is opened (refused, resumed or started).

Shared by every process: the LoRA weights, AdamW's state, the EMA, the step
counter and the log (the learning rate follows from the step). Per process: the generators behind its
prompts and noise (the fine-tuner's own, torch's, numpy's, Python's, CUDA's).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from reward.utils import jsonable
from reward.utils.processes import on_main
from reward.utils.runs import RunLock
from reward.utils.state import flatten_optimizer_state, rng_state, set_rng_state, unflatten_optimizer_state

from ..pipelines.lora import named_lora_parameters
from .checkpoints import TrainingState, complete_checkpoints, read_checkpoint, remove_partial
from .config import RESUME_FREE, require

__all__ = ["capture_state", "restore_state", "seed_processes", "open_run_dir", "lr_schedule"]

_LORA, _RNG = "lora.", "rng.finetuner"


def seed_processes(finetuner: Any, seed: int) -> None:
    """Distinct, reproducible streams per process: the fine-tuner's generator (prompts, seeds, gradient
    windows) and the global ones a ``prompt_fn`` may draw from."""
    rank = finetuner.accelerator.process_index
    set_seed(seed + rank)
    finetuner.rng.manual_seed(seed + rank)


def lr_schedule(config: Any, optimizer: torch.optim.Optimizer, step: int = 0) -> Any:
    """diffusers' schedule for ``config``, positioned after ``step`` optimizer steps. The rate is a function of
    the step alone, so it needs no saved state, and a run resumed with another ``max_steps`` follows the
    schedule of its new length."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                         num_training_steps=config.max_steps, last_epoch=step - 1)


def capture_state(finetuner: Any) -> TrainingState:
    optim_tensors, optim_meta = flatten_optimizer_state(finetuner.optimizer.state_dict())
    lora = named_lora_parameters(finetuner.unwrapped)
    tensors = {**{_LORA + name: p for name, p in lora.items()}, **optim_tensors}
    meta = {"step": finetuner.global_step, "history": finetuner.log.history, "config": finetuner.config.to_dict(),
            "optimizer": optim_meta}
    if finetuner.ema is not None:
        ema_tensors, meta["ema"] = finetuner.ema.state()
        tensors.update(ema_tensors)
    if finetuner.accelerator.scaler is not None:  # fp16: the loss scale and its growth tracker
        meta["grad_scaler"] = finetuner.accelerator.scaler.state_dict()
    rng_tensors, rng_meta = rng_state()
    return TrainingState(tensors, meta, {**rng_tensors, _RNG: finetuner.rng.get_state()}, rng_meta)


def _check_same_run(finetuner: Any, path: Path, saved: dict[str, Any]) -> None:
    current = jsonable(finetuner.config.to_dict())
    differing = sorted(k for k in current if k not in RESUME_FREE and saved.get(k) != current[k])
    if differing:
        raise ValueError(f"cannot resume from {path}: {differing} differ from the run that wrote it; expected the "
                         f"same settings (only {', '.join(RESUME_FREE)} may change)")


def restore_state(finetuner: Any, path: Path) -> None:
    """Load checkpoint ``path`` into ``finetuner`` (every process loads the shared state and its own
    generators)."""
    acc = finetuner.accelerator
    state = read_checkpoint(path, acc.process_index)
    _check_same_run(finetuner, path, state.meta["config"])
    for name, param in named_lora_parameters(finetuner.unwrapped).items():
        param.data.copy_(state.tensors[_LORA + name])
    finetuner.optimizer.load_state_dict(unflatten_optimizer_state(state.tensors, state.meta["optimizer"]))
    finetuner.lr_scheduler = lr_schedule(finetuner.config, finetuner.optimizer.optimizer, state.meta["step"])
    if finetuner.ema is not None:
        finetuner.ema.load_state(state.tensors, state.meta["ema"])
    if acc.scaler is not None and "grad_scaler" in state.meta:
        acc.scaler.load_state_dict(state.meta["grad_scaler"])
    finetuner.global_step = finetuner.saved_step = state.meta["step"]
    finetuner.log.history = state.meta["history"]
    saved_world = state.meta["world_size"]
    if saved_world == acc.num_processes:
        set_rng_state(state.rng_tensors, state.rng_meta)
        finetuner.rng.set_state(state.rng_tensors[_RNG])
    else:  # the streams were per process: new ones, still reproducible, for the new process count
        if acc.is_main_process:
            warnings.warn(f"{path} was written by {saved_world} process(es) and is resumed by {acc.num_processes}: "
                          "weights, optimizer, schedule and step continue, but prompts and noise come from new "
                          "random streams (seeded by the step)", RuntimeWarning, stacklevel=2)
        seed_processes(finetuner, finetuner.config.seed + 7919 * (finetuner.global_step + 1))


def open_run_dir(finetuner: Any) -> None:
    """Refuse to mix with an earlier run, resume one, or start one. Every process decides from the same files:
    all of them look before the main process changes anything."""
    acc, run_dir = finetuner.accelerator, finetuner.run_dir
    finetuner.run_lock = on_main(acc, lambda: RunLock(run_dir).acquire())  # one live run per folder
    found = complete_checkpoints(run_dir)
    require(not found or finetuner.config.resume,
            f"{run_dir} holds checkpoints of an earlier run (newest: {found[-1].name if found else ''}); pass "
            "resume=True (--resume) to continue it, or choose a new output directory")
    acc.wait_for_everyone()
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_partial(run_dir)
    if found:
        restore_state(finetuner, found[-1])
    elif finetuner.config.resume:
        acc.print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
    acc.wait_for_everyone()
