"""The run plumbing every diffusion trainer shares: its Accelerator and processes, the run folder and its lock,
per-process random streams, checkpoints that continue bit for bit, the step loop, trackers and the log.

A checkpoint holds, shared by every process: the trained weights, AdamW's state, the EMA, the step counter,
the log (the learning rate follows from the step) and what a subclass adds; per process: the generators
behind its prompts and noise (the trainer's own, torch's, numpy's, Python's, CUDA's).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from reward.utils import jsonable, progress_bar
from reward.utils.processes import on_main, run_environment
from reward.utils.runs import RunLock
from reward.utils.state import flatten_optimizer_state, rng_state, set_rng_state, unflatten_optimizer_state

from .checkpoints import TrainingState, complete_checkpoints, read_checkpoint, remove_partial, write_checkpoint
from .config import RESUME_FREE, require
from .launch import check_world_size, finetune_accelerator, resolved_config
from .log import TrainingLog
from .tracking import finish_trackers, start_trackers

__all__ = ["DiffusionTrainer", "lr_schedule"]

_TRAINED, _RNG = "lora.", "rng.finetuner"


def lr_schedule(config: Any, optimizer: torch.optim.Optimizer, step: int = 0) -> Any:
    """diffusers' schedule for ``config``, positioned after ``step`` optimizer steps. The rate is a function of
    the step alone, so it needs no saved state, and a run resumed with another ``max_steps`` follows the
    schedule of its new length."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                         num_training_steps=config.max_steps, last_epoch=step - 1)


class DiffusionTrainer:
    """Base of the diffusion trainers: what a run does that is not the algorithm.

    ``config`` is a dataclass with ``to_dict()`` and the run fields of
    :class:`RewardFinetuneConfig` (``seed``, ``max_steps``, ``output_dir``,
    ``resume``, ``save_every``, ``keep_checkpoints``, ``log_with``,
    ``tracker_project``, ``progress_bar``, ``cpu``, ``mixed_precision``,
    ``gradient_accumulation_steps`` and the ``lr_*`` schedule fields).

    A subclass, in its ``__init__``:

    1. calls ``super().__init__(config, accelerator)`` (builds or checks the
       Accelerator, the trainer's generator ``self.rng``, ``self.log``);
    2. builds its models and sets ``self.model`` (prepared by accelerate),
       ``self.optimizer``, ``self.lr_scheduler`` (:func:`lr_schedule`) and
       ``self.ema`` (a ``LoraEMA`` or None);
    3. calls :meth:`start_run`, which seeds the processes and opens (or resumes)
       the run folder.

    and implements:

    * :meth:`train_step` -> the step's statistics; it increments
      ``self.global_step`` and appends the record to ``self.log``;
    * :meth:`trained_parameters` -> the named tensors it trains (checkpointed
      and restored in place);
    * optionally :meth:`extra_state` / :meth:`load_extra_state` for state of
      its own (a reference model, a replay buffer: tensors plus JSON metadata),
      :meth:`after_step` (called after every step and once before the first,
      e.g. to save sample grids) and :meth:`write_outputs` (the main process's
      last files, e.g. the LoRA).
    """

    name = "train"  # the progress bar's label

    def __init__(self, config: Any, accelerator: Any | None = None):
        self.config = config
        require(accelerator is None or not config.log_with,
                "log_with configures the Accelerator the fine-tuner builds; pass log_with to your own Accelerator")
        if accelerator is not None:
            check_world_size(accelerator)
        self.accelerator = accelerator or finetune_accelerator(config)
        self.config = config = resolved_config(config, self.accelerator)
        self.rng = torch.Generator()
        self.ema: Any = None
        self.log = TrainingLog(config.to_dict(), run_environment(self.accelerator))
        self.global_step = self.saved_step = 0
        self.run_dir = Path(config.output_dir) if config.output_dir is not None else None
        self.run_lock: RunLock | None = None

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # --- what a subclass implements ----------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns its statistics (a record of ``self.log``)."""
        raise NotImplementedError(f"{type(self).__name__} must define train_step()")

    def trained_parameters(self) -> Mapping[str, torch.Tensor]:
        """The trained tensors by name; checkpoints save them and resumption copies into them."""
        raise NotImplementedError(f"{type(self).__name__} must define trained_parameters()")

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Shared state of the subclass's own to checkpoint: tensors (names must not clash) and JSON metadata."""
        return {}, {}

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (``tensors`` holds the whole checkpoint)."""

    def after_step(self, first: bool = False) -> None:
        """Called once before the first step (``first``) and after every step."""

    def write_outputs(self, run_dir: Path) -> None:
        """The main process's last files of a run, after the log."""

    # --- run folder, seeds, checkpoints ------------------------------------------------------------------

    def start_run(self) -> None:
        """Seed the processes and, with ``output_dir``, open the run folder (resuming from it when asked)."""
        self.seed_processes(self.config.seed)
        if self.run_dir is not None:
            self.open_run_dir()

    def seed_processes(self, seed: int) -> None:
        """Distinct, reproducible streams per process: the trainer's generator (prompts, seeds, gradient
        windows) and the global ones a ``prompt_fn`` may draw from."""
        rank = self.accelerator.process_index
        set_seed(seed + rank)
        self.rng.manual_seed(seed + rank)

    def capture_state(self) -> TrainingState:
        """Everything :meth:`restore_state` needs to continue this run bit for bit."""
        optim_tensors, optim_meta = flatten_optimizer_state(self.optimizer.state_dict())
        tensors = {**{_TRAINED + name: p for name, p in self.trained_parameters().items()}, **optim_tensors}
        meta = {"step": self.global_step, "history": self.log.history, "config": self.config.to_dict(),
                "optimizer": optim_meta}
        if self.ema is not None:
            ema_tensors, meta["ema"] = self.ema.state()
            tensors.update(ema_tensors)
        if self.accelerator.scaler is not None:  # fp16: the loss scale and its growth tracker
            meta["grad_scaler"] = self.accelerator.scaler.state_dict()
        extra_tensors, extra_meta = self.extra_state()
        tensors.update(extra_tensors)
        if extra_meta:
            meta["extra"] = extra_meta
        rng_tensors, rng_meta = rng_state()
        return TrainingState(tensors, meta, {**rng_tensors, _RNG: self.rng.get_state()}, rng_meta)

    def _check_same_run(self, path: Path, saved: dict[str, Any]) -> None:
        current = jsonable(self.config.to_dict())
        differing = sorted(k for k in current if k not in RESUME_FREE and saved.get(k) != current[k])
        if differing:
            raise ValueError(f"cannot resume from {path}: {differing} differ from the run that wrote it; expected "
                             f"the same settings (only {', '.join(RESUME_FREE)} may change)")

    def restore_state(self, path: Path) -> None:
        """Load checkpoint ``path`` (every process loads the shared state and its own generators)."""
        acc = self.accelerator
        state = read_checkpoint(path, acc.process_index)
        self._check_same_run(path, state.meta["config"])
        for name, param in self.trained_parameters().items():
            param.data.copy_(state.tensors[_TRAINED + name])
        self.optimizer.load_state_dict(unflatten_optimizer_state(state.tensors, state.meta["optimizer"]))
        self.lr_scheduler = lr_schedule(self.config, self.optimizer.optimizer, state.meta["step"])
        if self.ema is not None:
            self.ema.load_state(state.tensors, state.meta["ema"])
        if acc.scaler is not None and "grad_scaler" in state.meta:
            acc.scaler.load_state_dict(state.meta["grad_scaler"])
        self.load_extra_state(state.tensors, state.meta.get("extra", {}))
        self.global_step = self.saved_step = state.meta["step"]
        self.log.history = state.meta["history"]
        saved_world = state.meta["world_size"]
        if saved_world == acc.num_processes:
            set_rng_state(state.rng_tensors, state.rng_meta)
            self.rng.set_state(state.rng_tensors[_RNG])
        else:  # the streams were per process: new ones, still reproducible, for the new process count
            if acc.is_main_process:
                warnings.warn(f"{path} was written by {saved_world} process(es) and is resumed by "
                              f"{acc.num_processes}: weights, optimizer, schedule and step continue, but prompts and "
                              "noise come from new random streams (seeded by the step)", RuntimeWarning, stacklevel=2)
            self.seed_processes(self.config.seed + 7919 * (self.global_step + 1))

    def open_run_dir(self) -> None:
        """Refuse to mix with an earlier run, resume one, or start one. Every process decides from the same files:
        all of them look before the main process changes anything."""
        acc, run_dir = self.accelerator, self.run_dir
        self.run_lock = on_main(acc, lambda: RunLock(run_dir).acquire())  # one live run per folder
        found = complete_checkpoints(run_dir)
        require(not found or self.config.resume,
                f"{run_dir} holds checkpoints of an earlier run (newest: {found[-1].name if found else ''}); pass "
                "resume=True (--resume) to continue it, or choose a new output directory")
        acc.wait_for_everyone()
        if acc.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_partial(run_dir)
        if found:
            self.restore_state(found[-1])
        elif self.config.resume:
            acc.print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step into ``output_dir/checkpoints`` (every process must
        call this), keeping the ``keep_checkpoints`` newest."""
        require(self.run_dir is not None, "save_checkpoint needs output_dir")
        path = write_checkpoint(self.accelerator, self.run_dir, self.global_step, self.capture_state(),
                                self.config.keep_checkpoints)
        self.saved_step = self.global_step
        return path

    # --- the loop ----------------------------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> TrainingLog:
        """Train until the step counter reaches ``max_steps`` (default: the config's; a resumed run continues
        from its checkpoint), then write the log, what the subclass writes and a last checkpoint into
        ``output_dir`` (when set). Returns the log."""
        cfg, acc = self.config, self.accelerator
        steps = cfg.max_steps if max_steps is None else max_steps
        start_trackers(acc, cfg.tracker_project, cfg.to_dict())
        bar = progress_bar(total=steps, initial=min(self.global_step, steps), desc=self.name, unit="step",
                           disable=not (cfg.progress_bar and acc.is_main_process))
        if self.global_step == 0:
            self.after_step(first=True)
        while self.global_step < steps:
            self.train_step()
            bar.set_postfix(reward=f"{self.log.smoothed_rewards()[-1]:.4f}")
            bar.update(1)
            if cfg.save_every and self.global_step % cfg.save_every == 0:
                self.save_checkpoint()
            self.after_step()
        bar.close()
        self._finish()
        return self.log

    def _finish(self) -> None:
        acc = self.accelerator
        if self.run_dir is not None:
            if self.config.save_every and self.saved_step != self.global_step:
                self.save_checkpoint()
            if acc.is_main_process:
                self.log.write(self.run_dir)
                self.write_outputs(self.run_dir)
            acc.wait_for_everyone()
            if self.run_lock is not None:
                self.run_lock.release()
        finish_trackers(acc)
