"""The parts of a diffusion trainer that its subclasses share beyond the run plumbing of ``base``: a fresh LoRA
on a frozen pipeline with its optimizer, schedule and EMA, the end of an optimizer step, the guard against
non-finite values, sample grids, and the hacking monitor (evaluated, logged, checkpointed by the base, its best
LoRA put back on an early stop)."""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mst_clipiqa.reward.utils import precision_dtype, write_json
from mst_clipiqa.runtime.ema import LoraEMA
from mst_clipiqa.runtime.nonfinite import NonFiniteError, nonfinite_counts
from mst_clipiqa.runtime.sharding import (
    check_sharding,
    copy_whole_,
    is_sharded,
    reshard_after_every_forward,
    whole_tensors,
)

from ..inference.grid import image_grid
from ..pipelines.families import PipelineFamily
from ..pipelines.lora import add_lora, lora_parameters, lora_state, save_lora
from ..rewards import Rewards
from .config import TrainerConfig, require
from .launch import check_weight_precision
from .monitor import HackingMonitor, MonitorError
from .tracking import TrainingLog, gathered_statistics, log_grid

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = ["ADVICE", "SKIP_LIMIT", "TrainerParts", "describe_nonfinite", "lr_schedule"]

SKIP_LIMIT = 10  # batches dropped in a row before a skipping run gives up: the weights no longer give numbers

ADVICE = ("try a lower learning_rate (--learning-rate) or max_grad_norm, a reward that is finite on these images, "
          "or on_nonfinite='skip' (--on-nonfinite skip) to drop such batches")


def describe_nonfinite(bad: Mapping[str, tuple[int, int]], step: int) -> str:
    """``reward returned NaN or inf for 1 of 2 images, loss non-finite at step 3``."""
    parts = []
    for name, (k, n) in bad.items():
        if name == "images":
            parts.append(f"the denoiser gave NaN or inf images for {k} of {n} (its LoRA weights diverged)")
        elif name.startswith("reward"):
            parts.append(f"{name} returned NaN or inf for {k} of {n} image(s)")
        else:
            parts.append(f"{name} non-finite")
    return f"{', '.join(parts)} at step {step}"


def lr_schedule(config: TrainerConfig, optimizer: torch.optim.Optimizer, step: int = 0) -> Any:
    """diffusers' schedule for ``config``, positioned after ``step`` optimizer steps. The rate is a function of
    the step alone, so it needs no saved state, and a run resumed with another ``max_steps`` follows the
    schedule of its new length."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.run.lr_scheduler, optimizer, num_warmup_steps=config.run.lr_warmup_steps,
                         num_training_steps=config.run.max_steps, last_epoch=step - 1)


class TrainerParts(ABC):
    """The base of :class:`~.base.DiffusionTrainer`. What its methods read is declared below: the run's part
    (``config`` to ``_skipped_in_row``) is set by ``DiffusionTrainer.__init__``; the trained part (``model``,
    ``optimizer``, ``lr_scheduler``, ``params``) by :meth:`setup_lora`, or by the subclass itself, before
    ``start_run`` checks it; the abstract methods are the subclass's (``trained_parameters``) and the
    base's (``save_checkpoint``)."""

    config: TrainerConfig
    accelerator: Any
    log: TrainingLog
    global_step: int
    saved_step: int
    skipped_batches: int
    _skipped_in_row: int
    run_dir: Path | None
    monitor: HackingMonitor | Any | None  # any object with should_stop / best_state (see hacking_monitor)
    model: nn.Module  # prepared by accelerate
    optimizer: Any  # accelerate's wrapper of a torch optimizer
    lr_scheduler: Any
    params: list[nn.Parameter]  # the LoRA's
    lora_config: LoraConfig | None = None  # peft's, of the LoRA setup_lora gave
    lora_site: tuple[Any, str] | None = None  # the pipeline and its denoiser's name, for save_lora
    ema: LoraEMA | None = None

    @abstractmethod
    def trained_parameters(self) -> Mapping[str, torch.Tensor]:
        """The trained tensors by name; checkpoints save them and resumption copies into them."""

    @abstractmethod
    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step (every process must call this)."""

    def _check_parts(self) -> None:
        """A ``TypeError`` naming what a subclass's ``__init__`` left out: the trained part, and :meth:`sample`
        where sample grids or a hacking monitor need it."""
        missing = [name for name in ("model", "optimizer", "lr_scheduler") if not hasattr(self, name)]
        if missing:
            raise TypeError(f"{type(self).__name__}.__init__ must set self.{', self.'.join(missing)} before "
                            "start_run() (setup_lora() sets them for a LoRA on a pipeline's denoiser)")
        if self.config.run.sample_every:
            self._require_sample("sample grids (sample_every)")

    def _require_sample(self, what: str) -> None:
        if type(self).sample is TrainerParts.sample:
            raise TypeError(f"{type(self).__name__} must define sample(prompts, seeds) for {what}")

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def sample(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] of the current model (its EMA when on), one per (prompt, seed), without
        gradients: what sample grids and the hacking monitor show."""
        raise NotImplementedError(f"{type(self).__name__} must define sample() for sample grids and the monitor")

    def setup_lora(self, pipe: Any, family: PipelineFamily, scorers: Iterable[Any] = ()) -> None:
        """Freeze ``pipe`` (and the ``scorers`` that are modules) on the run's device and precision, give its
        denoiser (``family.denoiser``) a fresh LoRA (fp32), and set ``self.model``, ``self.optimizer`` (AdamW),
        ``self.params``, ``self.lr_scheduler``, ``self.ema`` and what :meth:`save_lora` saves.

        Under accelerate's FSDP2 the denoiser, base and LoRA, is sharded over the processes; it reaches the device
        only in shards (the rest of the pipeline whole), and ``self.params`` are the LoRA's shards."""
        config, acc, denoiser = self.config.run, self.accelerator, family.denoiser
        check_weight_precision(pipe, acc)
        check_sharding(acc)
        weight_dtype = precision_dtype(acc.mixed_precision) or torch.float32
        modules = [m for m in pipe.components.values() if isinstance(m, nn.Module)]
        for module in modules:
            module.requires_grad_(False)
        if is_sharded(acc):  # a whole base on every device first would defeat the sharding
            for module in modules:
                if module is not denoiser:
                    module.to(acc.device)
        else:
            pipe.to(acc.device)
        if weight_dtype != torch.float32:  # frozen weights in half precision; LoRA cast back to fp32 below
            pipe.to(dtype=weight_dtype)
        for fn in scorers:
            if isinstance(fn, nn.Module):
                # A fixed critic: its parameters must neither train nor pile up gradients nobody zeroes.
                fn.requires_grad_(False).eval().to(acc.device)
        self.lora_config = add_lora(denoiser, config.lora_rank, config.lora_alpha, config.lora_target_modules,
                                    seed=config.seed)
        params = lora_parameters(denoiser)
        for p in params:  # LoRA weights stay fp32 under fp16/bf16 mixed precision
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        # Stepped once per optimizer step by the trainer, not by accelerate (which steps it once per process).
        self.lr_scheduler = lr_schedule(self.config, optimizer)
        self.model, self.optimizer = acc.prepare(denoiser, optimizer)
        reshard_after_every_forward(self.model, acc)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]  # FSDP2: the shards
        self.ema = LoraEMA(self.params, config.ema_decay) if config.use_ema else None
        self.lora_site = (pipe, family.denoiser_name)

    def drop_batch(self, **values: torch.Tensor) -> bool:
        """Check a batch's values (``reward`` (B,), ``loss``, ``grad_norm``, ...) for NaN / inf on every
        process, before the optimizer step. Returns False when they are finite; otherwise raises a
        :class:`NonFiniteError` saying where (``on_nonfinite="raise"``) or warns, counts and returns True
        (``"skip"``): the caller then drops the batch (no optimizer step) and returns None. Collective."""
        if self.accelerator.scaler is not None:  # fp16: an inf gradient norm is the loss scaler's overflow
            values.pop("grad_norm", None)
        bad = nonfinite_counts(self.accelerator, values)
        if not bad:
            return False
        where, skip = describe_nonfinite(bad, self.global_step + 1), self.config.run.on_nonfinite == "skip"
        if not skip or self._skipped_in_row + 1 >= SKIP_LIMIT:
            again = f" ({SKIP_LIMIT} batches in a row)" if skip else ""
            raise NonFiniteError(f"stopped: {where}{again}; no checkpoint holds these values "
                                 f"(newest: step {self.saved_step}); {ADVICE}")
        self.skipped_batches += 1
        self._skipped_in_row += 1
        if self.accelerator.is_main_process:
            warnings.warn(f"dropped a batch ({where}): no optimizer step; {self.skipped_batches} batch(es) dropped "
                          "in this run", RuntimeWarning, stacklevel=2)
        return True

    def _check_record(self, record: dict[str, float]) -> None:
        """The step's reported values, for a ``train_step`` that does not call :meth:`drop_batch`."""
        names = ("loss", "reward") + (("grad_norm",) if self.accelerator.scaler is None else ())
        bad = [k for k in names if k in record and not math.isfinite(record[k])]
        if bad:
            raise NonFiniteError(f"stopped: {', '.join(bad)} non-finite at step {self.global_step}; no checkpoint "
                                 f"of this step is written (newest: step {self.saved_step}); {ADVICE}")

    def backward_and_step(self, loss: torch.Tensor, **checked: torch.Tensor) -> bool:
        """One micro-batch's backward pass and (accelerate's) optimizer step, after :meth:`drop_batch` checked
        ``loss`` and the ``checked`` values (rewards, images); when the gradients sync, their norm before
        clipping is kept in ``grad_norm`` and checked too. True when the batch is dropped: no step, and the
        gradients of the step's earlier micro-batches discarded."""
        acc = self.accelerator
        dropped = self.drop_batch(**checked, loss=loss)
        if not dropped:
            acc.backward(loss)
            if acc.sync_gradients:  # an infinite bound clips nothing
                self.grad_norm = acc.clip_grad_norm_(self.params, self.config.run.max_grad_norm or float("inf"))
                dropped = self.drop_batch(grad_norm=torch.as_tensor(self.grad_norm))
        if dropped:
            for p in self.params:
                p.grad = None
            return True
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return False

    def record_step(self, stats: list[dict[str, torch.Tensor]], grad_norm: Any, lr: float) -> dict[str, float]:
        """End an optimizer step: schedule and EMA step (unless fp16 skipped it), count it, and log the
        statistics of every micro-batch of every process (collective). Returns the record."""
        acc = self.accelerator
        if not self.optimizer.step_was_skipped:  # fp16 overflow: no step, so no schedule or EMA step either
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step()
        self.global_step += 1
        record = {"step": self.global_step, **gathered_statistics(acc, stats), "grad_norm": float(grad_norm),
                  "lr": lr}
        self.log.append(record)
        acc.log({k: v for k, v in record.items() if k != "step"}, step=self.global_step)
        return record

    def evaluation_weights(self) -> Any:
        """The EMA weights inside the block when ``use_ema`` is on."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    def hacking_monitor(self, monitor: Rewards | HackingMonitor | None, reward: Rewards | None = None,
                        weights: Mapping[str, float] | None = None) -> HackingMonitor | None:
        """``monitor=`` as a trainer takes it: None, a ready :class:`HackingMonitor` (or any object called as
        ``monitor(step, state=...)`` with ``should_stop`` and ``best_state``), or scorers (any reward form)
        watched on the config's held-out grid by this trainer's :meth:`sample`, with the optimised ``reward``
        (weighted by ``weights``) for the patience rule."""
        if monitor is None or hasattr(monitor, "should_stop"):
            return monitor
        self._require_sample("the hacking monitor (monitor=)")
        cfg = self.config
        require(bool(cfg.run.monitor_prompts), "monitor= needs monitor_prompts (the held-out prompts it samples, each "
                                           "with every one of monitor_seeds)")
        for fn in monitor.values() if isinstance(monitor, Mapping) else [monitor]:
            if isinstance(fn, nn.Module):
                fn.requires_grad_(False).eval().to(self.accelerator.device)
        return HackingMonitor(self.sample, monitor, cfg.run.monitor_prompts, cfg.run.monitor_seeds, reward=reward,
                              every=cfg.run.monitor_every, patience=cfg.run.patience, weights=weights,
                              score_batch_size=cfg.run.batch_size)

    def write_outputs(self, run_dir: Path) -> None:
        """The last files of a run, after the log: the LoRA :meth:`setup_lora` gave (unless ``save_lora`` is
        off). Every process calls it (a sharded LoRA is gathered); the main process writes."""
        if self.config.run.save_lora and self.lora_site is not None:
            self.save_lora(run_dir / "lora")

    def save_lora(self, directory: str | Path) -> Path:
        """Save the LoRA (the EMA weights when ``use_ema`` is on) in diffusers format for
        ``pipe.load_lora_weights``. The main process writes; a sharded LoRA needs every process to call it."""
        require(self.lora_site is not None, "save_lora needs the LoRA of setup_lora()")
        pipe, denoiser_name = self.lora_site
        with self.evaluation_weights():
            state = lora_state(self.unwrapped)
        if not self.accelerator.is_main_process:
            return Path(directory)
        return save_lora(pipe, self.unwrapped, directory, denoiser_name, state=state)

    def _monitored_state(self) -> dict[str, torch.Tensor]:
        with self.evaluation_weights():  # the weights the monitor's samples came from
            return {name: p.detach().cpu().clone() for name, p in whole_tensors(self.trained_parameters()).items()}

    def _watch(self) -> bool:
        """Run the monitor when it is due (every process, on the same weights and seeds); True to stop."""
        if self.monitor is None:
            return False
        try:
            record = self.monitor(self.global_step, state=self._monitored_state)
        except MonitorError as error:
            return self._monitor_failed(error)
        if record:
            named = {(f"monitor_{k}" if k.startswith("reward") else k): v for k, v in record.items() if k != "step"}
            if self.log.history and self.log.history[-1]["step"] == self.global_step:
                self.log.history[-1].update(named)
            self.accelerator.log(named, step=self.global_step)
        return bool(self.monitor.should_stop)

    def _monitor_failed(self, error: MonitorError) -> bool:
        """A monitor that cannot score: with ``on_nonfinite="skip"`` a warning and training goes on; else the
        work is checkpointed and a one-line :class:`NonFiniteError` stops the run."""
        if self.config.run.on_nonfinite == "skip":
            warnings.warn(f"{error}; skipping this evaluation, training goes on (on_nonfinite='skip')",
                          RuntimeWarning, stacklevel=3)
            return False
        if self.global_step == 0:
            kept = "no step was trained; fix the monitor and start again"
        elif self.run_dir is None:
            kept = "nothing saved (no output_dir)"
        else:
            if self.saved_step != self.global_step:
                self.save_checkpoint()
            kept = (f"step {self.global_step} is checkpointed in {self.run_dir}: fix the monitor and run again "
                    "with --resume (resume=True), or pass --on-nonfinite skip to train without its evaluations")
        raise NonFiniteError(f"stopped: {error}; {kept}")

    def _keep_monitors_best(self) -> None:
        best = self.monitor.best_state
        if best is None:
            return
        with torch.no_grad():
            for name, p in self.trained_parameters().items():
                copy_whole_(p, best[name])
            if self.ema is not None:  # the saved LoRA is the EMA's: it gets the monitor's best too
                for shadow, p in zip(self.ema.weights, self.params):
                    shadow.copy_(p)

    def after_step(self, first: bool = False) -> None:
        """Save (and log) a sample grid every ``sample_every`` steps and before the first (a subclass that
        overrides this calls it too)."""
        cfg = self.config
        due = cfg.run.sample_every and (first or self.global_step % cfg.run.sample_every == 0)
        main = self.accelerator.is_main_process
        if not due or self.run_dir is None or not (main or is_sharded(self.accelerator)):
            return  # a sharded model samples on every process
        prompts = [p for p in cfg.run.sample_prompts for _ in cfg.run.sample_seeds]
        seeds = [s for _ in cfg.run.sample_prompts for s in cfg.run.sample_seeds]
        images = self.sample(prompts, seeds)
        if not main:
            return
        grid = image_grid(list(images), columns=len(cfg.run.sample_seeds))
        path = self.run_dir / "samples" / f"step_{self.global_step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        log_grid(self.accelerator, "samples", grid, self.global_step)

    def _write_monitor(self, stopped: bool) -> None:
        records = getattr(self.monitor, "records", None)
        if not records:
            return
        write_json(self.run_dir / "monitor.json", {"records": records, "best_step": self.monitor.best_step,
                                                   "stopped_early": stopped, "last_step": self.global_step})
        self.monitor.plot(self.run_dir / "monitor.png")
