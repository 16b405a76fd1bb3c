"""The run plumbing every diffusion trainer shares: its Accelerator, the run folder and its lock, per-process random
streams, checkpoints that continue bit for bit, stop points and the step loop."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from mst_clipiqa.reward.utils import jsonable, progress_bar
from mst_clipiqa.reward.utils.config_files import CONFIG_NAME, option_values, write_config
from mst_clipiqa.runtime.checkpoints import (
    DamagedCheckpoint,
    TrainingState,
    capture_state,
    check_same_run,
    key_seeds,
    read_checkpoint,
    reseed,
    resume_newest,
    step_folders,
    write_checkpoint,
)
from mst_clipiqa.runtime.nonfinite import check_finite_weights
from mst_clipiqa.runtime.preemption import Interrupted, Preempted, StopSignals, interruptible
from mst_clipiqa.runtime.processes import on_main, run_environment, warn_if_alone
from mst_clipiqa.runtime.runs import RunLock
from mst_clipiqa.runtime.sharding import copy_whole_, is_sharded

from ..rewards import Rewards
from .config import RESUME_FREE, TrainerConfig, flat_settings, require
from .launch import finetune_accelerator, resolved_config
from .tracking import TrainingLog, finish_trackers, start_trackers
from .trainer_parts import ADVICE, TrainerParts, lr_schedule

__all__ = ["DiffusionTrainer", "lr_schedule"]

_TRAINED = "lora."
_DIVERGED = f"training diverged; {ADVICE}"


class DiffusionTrainer(TrainerParts):
    """Base of the diffusion trainers: what a run does beyond its algorithm. docs/architecture.md lists what a
    subclass sets and implements; ``config`` is a method's config whose ``run`` is a :class:`~.config.RunConfig`."""

    name = "train"  # the progress bar's label
    config_class: ClassVar[type]  # the config it takes, for ``TRAINERS`` and the command line
    reward: Rewards | None = None  # what it optimises, if a reward

    def __init__(self, config: TrainerConfig, accelerator: Any | None = None):
        require(accelerator is None or not config.run.log_with,
                "log_with configures the Accelerator the fine-tuner builds; pass log_with to your own Accelerator")
        if accelerator is not None:
            warn_if_alone(accelerator)
        self.accelerator = accelerator or finetune_accelerator(config)
        self.config = config = resolved_config(config, self.accelerator)
        self.rng = torch.Generator()
        self.monitor: Any = None
        self.log = TrainingLog(config.to_dict(), run_environment(self.accelerator))
        self.global_step = self.saved_step = 0
        self.run_dir = Path(config.run.output_dir) if config.run.output_dir is not None else None
        self.run_lock: RunLock | None = None
        self.identity: dict[str, str] = {}
        self.skipped_batches = self._skipped_in_row = 0
        self.evaluation_due = self.samples_due = False  # the monitor and sample grid of the last step still to run

    @abstractmethod
    def train_step(self) -> dict[str, float] | None:
        """One optimizer step; returns its statistics (a record of ``self.log``), or None for a dropped batch."""

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Shared state of the subclass's own to checkpoint: tensors (names must not clash) and JSON metadata."""
        return {}, {}

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (``tensors`` holds the whole checkpoint)."""

    def run_identity(self) -> dict[str, str]:
        """What the run is trained against, field by field (names or digests); a resume against others is refused."""
        return {}

    def progress_key(self) -> str:
        """The name of the progress bar's number (each step's reward, smoothed), with the scale it is on."""
        scale = getattr(self.reward, "score_range", None)
        return f"reward ({scale[0]:g}-{scale[1]:g})" if scale else "reward"

    def stop_early(self) -> bool:
        """A subclass's own stop, asked on every process after each step and when a resumed run starts."""
        return False

    def start_run(self) -> None:
        """Check what ``__init__`` set and, with ``output_dir``, open (or resume) the run folder."""
        self._check_parts()
        if self.run_dir is not None:  # what checkpoints record (a data set digest may take a while)
            self.identity = {k: str(v) for k, v in self.run_identity().items()}
            self.open_run_dir()

    def seed_processes(self, *key: int) -> None:
        """Seed this process's streams (the trainer's generator and the global ones) from ``key`` and its rank:
        distinct per process, and alike in a straight and a resumed run."""
        reseed(*key, self.accelerator.process_index, generator=self.rng)

    def shared_generator(self) -> torch.Generator:
        """A generator seeded alike on every process by the step (a dropped batch moves it on), for what all must
        agree on, such as how many denoiser passes a step makes (the collectives of DDP and FSDP go with them)."""
        key = [self.config.run.seed, self.global_step, self.skipped_batches]
        return torch.Generator().manual_seed(key_seeds(key, 1)[0])

    def capture_state(self) -> TrainingState:
        """Everything :meth:`restore_state` needs to continue this run bit for bit."""
        scaler, extra = self.accelerator.scaler, self.extra_state()
        ema = self.ema.state() if self.ema is not None else ({}, None)
        monitor = self.monitor.state_dict() if callable(getattr(self.monitor, "state_dict", None)) else ({}, None)
        trained = {_TRAINED + name: p for name, p in self.trained_parameters().items()}
        meta = {"step": self.global_step, "history": self.log.history, "config": self.config.to_dict(),
                "identity": self.identity, "skipped_batches": self.skipped_batches, "ema": ema[1],
                "evaluation_due": self.evaluation_due, "samples_due": self.samples_due, "monitor": monitor[1],
                "extra": extra[1], "grad_scaler": scaler.state_dict() if scaler is not None else None}  # fp16's
        return capture_state({**trained, **ema[0], **monitor[0], **extra[0]}, meta, self.optimizer)

    def restore_state(self, path: Path) -> None:
        """Load checkpoint ``path``; a :class:`DamagedCheckpoint` names a missing, damaged or non-finite part."""
        state = read_checkpoint(path, ["history", "config"])
        meta, scaler = state.meta, self.accelerator.scaler
        # before the tensors: another pipeline's LoRA is another run, not a damaged checkpoint
        check_same_run(path, (flat_settings(meta["config"], getattr(type(self.config), "renamed", {})),
                              flat_settings(jsonable(self.config.to_dict()))),
                       (meta.get("identity"), self.identity), RESUME_FREE)
        try:  # a part the checkpoint lacks is named, never a bare KeyError
            for name, param in self.trained_parameters().items():
                copy_whole_(param, state.tensors[_TRAINED + name])
            state.restore(self.optimizer)
            if self.ema is not None:
                self.ema.load_state(state.tensors, meta["ema"])
            if scaler is not None and meta.get("grad_scaler"):
                scaler.load_state_dict(meta["grad_scaler"])
            if self.monitor is not None and meta.get("monitor") is not None:
                self.monitor.load_state_dict(state.tensors, meta["monitor"])
            self.load_extra_state(state.tensors, meta.get("extra", {}))
        except KeyError as error:
            raise DamagedCheckpoint(f"{path} lacks {error} (trained weights, EMA or trainer state)") from None
        self.lr_scheduler = lr_schedule(self.config, self.optimizer.optimizer, meta["step"])
        self.global_step = self.saved_step = meta["step"]
        self.log.history = meta["history"]
        self.skipped_batches = meta.get("skipped_batches", 0)
        self.evaluation_due, self.samples_due = meta.get("evaluation_due", False), meta.get("samples_due", False)

    def open_run_dir(self) -> None:
        """Refuse to mix with an earlier run, resume one, or start one; every process decides from the same files
        (nothing but the config file changes them, after)."""
        acc, run_dir = self.accelerator, self.run_dir
        self.run_lock = on_main(acc, lambda: RunLock(run_dir).acquire())  # creates the folder
        try:
            found = step_folders(run_dir)
            require(not found or self.config.run.resume,
                    f"{run_dir} holds checkpoints of an earlier run (newest: {found[-1].name if found else ''}); "
                    "pass resume=True (--resume) to continue it, or choose a new output directory")
            if found:
                resume_newest(found, self.restore_state, warn=acc.is_main_process)
            elif self.config.run.resume:
                acc.print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
            # what this run runs with, as the option: value file --config reads back
            on_main(acc, lambda: write_config(run_dir / CONFIG_NAME, option_values(self.config)))
        except BaseException:  # a refused resume leaves the folder free for the next try in this process
            self.release_run_dir()
            raise

    def release_run_dir(self) -> None:
        """Let another run (in this process too) open the run folder; the run's state stays as it is."""
        if self.run_lock is not None:
            self.run_lock.release()

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step into ``output_dir/checkpoints`` (every process must
        call this), keeping the ``keep_checkpoints`` newest."""
        require(self.run_dir is not None, "save_checkpoint needs output_dir")
        state = self.capture_state()
        check_finite_weights(state.tensors, f"not writing the step-{self.global_step} checkpoint", _DIVERGED)
        path = write_checkpoint(self.accelerator, self.run_dir, state, self.config.run.keep_checkpoints)
        self.saved_step = self.global_step
        return path

    def _unit(self, signals: StopSignals, unit: int, cut: str, work: Any, alone: bool = False) -> Any:
        """``work()``, seeded by the step and its kind of ``unit``, which a stop request cuts short at its next
        sampler step: the run stops as after the last step, saying what was ``cut``. Every process runs ``work``
        through the same sampler steps, except with ``alone`` (the main process works, the others wait)."""
        acc, given_up, result = self.accelerator, False, None
        self.seed_processes(self.config.run.seed, self.global_step, self.skipped_batches, unit)
        try:
            with interruptible(lambda: signals.requested(None if alone else acc)):
                result = work()
        except Interrupted:
            given_up = True
        if alone:  # the others learn whether the main process gave its unit up
            given_up = bool(acc.reduce(torch.tensor([int(given_up)], device=acc.device), "max").item())
        if given_up:  # only a stop request gives a unit up: this raises Preempted
            self._stop_if_asked(signals, f" ({cut})")
        return result

    def _due_units(self, signals: StopSignals) -> bool:
        """The monitor and the sample grid a step (or the run's start) left due; True when the monitor stops the
        run. Cut short, a unit stays due in the checkpoint and runs on resume."""
        stop = self.evaluation_due and self._unit(signals, 1, "its monitor was cut short and runs again on resume",
                                                  self._watch)
        self.evaluation_due = False
        if self.samples_due:  # a sharded model samples on every process, so that all agree at each sampler step
            self._unit(signals, 2, "its sample grid was cut short and is drawn on resume", self.after_step,
                       alone=not is_sharded(self.accelerator))
        self.samples_due = False
        return stop

    def _stop_if_asked(self, signals: StopSignals, cut: str = "") -> None:
        """When any process got SIGTERM / SIGINT: checkpoint and raise :class:`Preempted` on all."""
        if not (signum := signals.requested(self.accelerator)):
            return
        if self.run_dir is None:
            kept = "nothing saved (no output_dir)"
        elif self.global_step == 0:
            kept = "nothing trained yet: run the same command again to start"
        else:
            if self.saved_step != self.global_step:
                self.save_checkpoint()
            kept = (f"checkpoint written to {self.run_dir}; run the same command again with --resume (resume=True) "
                    "to continue")
        raise Preempted(signum, f"at step {self.global_step}{cut}; {kept}")

    def train(self, max_steps: int | None = None) -> TrainingLog:
        """Train until the step counter reaches ``max_steps`` (default: the config's), then write the log, the
        outputs and a last checkpoint into ``output_dir``. Whatever it raises, the run folder is released first."""
        cfg, acc = self.config, self.accelerator
        steps = cfg.run.max_steps if max_steps is None else max_steps
        try:
            start_trackers(acc, cfg.run.tracker_project, flat_settings(cfg.to_dict()))
            bar = progress_bar(total=steps, initial=min(self.global_step, steps), desc=self.name, unit="step",
                               disable=not (cfg.run.progress_bar and acc.is_main_process))
            with StopSignals() as signals:
                if self.global_step == 0:  # the grid and the monitor before any step
                    self.evaluation_due = self.samples_due = True
                stop = self._due_units(signals) or (self.monitor is not None and bool(self.monitor.should_stop))
                stop = stop or self.stop_early()
                while self.global_step < steps and not stop:
                    cut = f"step {self.global_step + 1} was cut short and runs again on resume"
                    if self._unit(signals, 0, cut, self.train_step) is not None:  # None: a dropped batch, no step
                        self._skipped_in_row = 0
                        self.evaluation_due = self.samples_due = True
                        self._check_record(self.log.history[-1])
                        bar.set_postfix({self.progress_key(): f"{self.log.smoothed_rewards()[-1]:.4f}"})
                        bar.update(1)
                        stop = self._due_units(signals) or self.stop_early()
                        if cfg.run.save_every and self.global_step % cfg.run.save_every == 0:
                            self.save_checkpoint()
                    if self.global_step < steps and not stop:  # at the end the run finishes instead
                        self._stop_if_asked(signals)
            bar.close()
            self._finish(stopped=stop)
            return self.log
        finally:
            finish_trackers(acc)
            self.release_run_dir()

    def _finish(self, stopped: bool) -> None:
        if stopped and self.monitor is not None and self.monitor.should_stop:
            self._keep_monitors_best()
        ema = self.ema.state()[0] if self.ema is not None else {}
        check_finite_weights({**self.trained_parameters(), **ema}, f"not writing the run's results at step "
                             f"{self.global_step}", _DIVERGED)
        if self.run_dir is None:
            return
        if self.config.run.save_every and self.saved_step != self.global_step:
            self.save_checkpoint()  # the state it stopped in, so that a resumed run knows it stopped
        if self.accelerator.is_main_process:
            self.log.write(self.run_dir)
            self._write_monitor(stopped)
        self.write_outputs(self.run_dir)
        self.accelerator.wait_for_everyone()
