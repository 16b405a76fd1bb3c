"""The run plumbing every diffusion trainer shares: its Accelerator and processes, the run folder and its lock,
per-process random streams, checkpoints that continue bit for bit, the step loop, trackers and the log.

A checkpoint holds, shared by every process: the trained weights, AdamW's state, the EMA, the step counter,
the log (the learning rate follows from the step) and what a subclass adds; per process: the generators
behind its prompts and noise (the trainer's own, torch's, numpy's, Python's, CUDA's).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate.utils import set_seed

from mst_clipiqa.reward.utils import jsonable, progress_bar
from mst_clipiqa.reward.utils.config_files import CONFIG_NAME, option_values, write_config
from mst_clipiqa.runtime.checkpoints import (
    DamagedCheckpoint,
    check_contents,
    check_same_run,
    read_checkpoint,
    remove_partial,
    resume_newest,
    step_folders,
    write_checkpoint,
)
from mst_clipiqa.runtime.preemption import StopSignals
from mst_clipiqa.runtime.processes import on_main, run_environment
from mst_clipiqa.runtime.runs import RunLock
from mst_clipiqa.runtime.sharding import copy_whole_
from mst_clipiqa.runtime.state import TrainingState, capture_state

from ..rewards import Rewards
from .config import RESUME_FREE, TrainerConfig, flat_settings, require
from .launch import check_world_size, finetune_accelerator, resolved_config
from .log import TrainingLog
from .nonfinite import check_finite_weights
from .stopping import StopPoints
from .tracking import finish_trackers, start_trackers
from .trainer_parts import TrainerParts, lr_schedule

__all__ = ["DiffusionTrainer", "lr_schedule"]

_TRAINED, _RNG = "lora.", "rng.finetuner"


class DiffusionTrainer(TrainerParts, StopPoints):
    """Base of the diffusion trainers: what a run does that is not the algorithm.

    ``config`` is a method's config (a dataclass with ``to_dict()``) whose ``run`` is a :class:`RunConfig`:
    ``seed``, ``max_steps``, ``output_dir``, ``resume``, ``save_every``, ``keep_checkpoints``, ``log_with``,
    ``tracker_project``, ``progress_bar``, ``cpu``, ``mixed_precision``, ``gradient_accumulation_steps``, the
    ``lr_*`` schedule fields, ...

    A subclass, in its ``__init__``:

    1. calls ``super().__init__(config, accelerator)`` (builds or checks the Accelerator, the trainer's
       generator ``self.rng``, ``self.log``);
    2. builds its models and sets ``self.model`` (prepared by accelerate), ``self.optimizer`` and
       ``self.lr_scheduler`` (:func:`lr_schedule`), and ``self.ema`` (a ``LoraEMA``) if it keeps one:
       :meth:`setup_lora` does all of it for a LoRA on a pipeline's denoiser;
    3. calls :meth:`start_run`, which checks step 2 (a ``TypeError`` names what is missing), seeds the
       processes and opens (or resumes) the run folder.

    and implements (abstract here: a subclass without them cannot be instantiated):

    * :meth:`train_step` -> the step's statistics; it increments ``self.global_step`` and appends the record
      to ``self.log``;
    * :meth:`trained_parameters` -> the named tensors it trains (checkpointed and restored in place);
    * optionally :meth:`extra_state` / :meth:`load_extra_state` for state of its own (a reference model, a
      replay buffer: tensors plus JSON metadata), :meth:`after_step` (called after every step and once before
      the first, e.g. to save sample grids) and :meth:`write_outputs` (the main process's last files, e.g. the
      LoRA);
    * optionally :meth:`run_identity`: what the run trains against (models, data), recorded in every
      checkpoint and checked on resume.

    Shared helpers (:class:`~.trainer_parts.TrainerParts`): :meth:`setup_lora` (a fresh fp32 LoRA on a
    frozen pipeline, its AdamW, schedule and EMA), :meth:`record_step` (the end of an optimizer step:
    schedule, EMA, counter, log, trackers) and :meth:`hacking_monitor`. A subclass that defines
    :meth:`sample` gets sample grids (``sample_every``) and the hacking monitor: ``monitor=`` scorers the
    run does not optimise, evaluated every ``monitor_every`` steps (and before the first) on
    ``monitor_prompts`` x ``monitor_seeds``, logged to the trackers, the log (``monitor``,
    ``monitor_reward``, ``diversity`` on the steps it ran) and ``monitor.json`` / ``monitor.png``; with
    ``patience`` the run stops early and the LoRA the monitor preferred is put back (and saved).

    Non-finite values: ``train`` stops when a step's record holds a NaN / inf ``loss``, ``reward`` or
    ``grad_norm`` and never writes non-finite weights. To stop (or, with ``on_nonfinite="skip"``, drop the
    batch) before the optimizer steps, ``train_step`` calls :meth:`drop_batch` with the batch's values and
    returns None when it says so. SIGTERM / SIGINT stop the run with a checkpoint and :class:`Preempted`: in one
    process within a sampler step (a step's sampling, a monitor evaluation or a sample grid cut short is given
    up, the random streams put back, and resuming redoes it bit for bit), in several after the current step;
    whatever ``train`` raises, it releases the run folder first.
    """

    name = "train"  # the progress bar's label
    config_class: ClassVar[type]  # the config it takes, for ``TRAINERS`` and the command line
    reward: Rewards | None = None  # what it optimises, if a reward

    def progress_key(self) -> str:
        """The name of the progress bar's number (each step's reward, smoothed), with the scale it is on."""
        scale = getattr(self.reward, "score_range", None)
        return f"reward ({scale[0]:g}-{scale[1]:g})" if scale else "reward"

    def stop_early(self) -> bool:
        """A subclass's own stop, asked on every process after each step and when a resumed run starts."""
        return False

    def __init__(self, config: TrainerConfig, accelerator: Any | None = None):
        require(accelerator is None or not config.run.log_with,
                "log_with configures the Accelerator the fine-tuner builds; pass log_with to your own Accelerator")
        if accelerator is not None:
            check_world_size(accelerator)
        self.accelerator = accelerator or finetune_accelerator(config)
        self.config = config = resolved_config(config, self.accelerator)
        self.rng = torch.Generator()
        self.ema = None
        self.monitor: Any = None
        self.log = TrainingLog(config.to_dict(), run_environment(self.accelerator))
        self.global_step = self.saved_step = 0
        self.run_dir = Path(config.run.output_dir) if config.run.output_dir is not None else None
        self.run_lock: RunLock | None = None
        self.identity: dict[str, str] = {}
        self.skipped_batches = self._skipped_in_row = 0
        self.evaluation_due = False  # the monitor of the current step is still to run (a stop cut it short)

    # --- what a subclass implements ----------------------------------------------------------------------

    @abstractmethod
    def train_step(self) -> dict[str, float] | None:
        """One optimizer step; returns its statistics (a record of ``self.log``), or None for a dropped batch."""

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Shared state of the subclass's own to checkpoint: tensors (names must not clash) and JSON metadata."""
        return {}, {}

    def load_extra_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (``tensors`` holds the whole checkpoint)."""

    def run_identity(self) -> dict[str, str]:
        """What the run is trained against, field by field (e.g. ``reward_model``, ``pipeline``, ``denoiser``,
        ``prompts``: names or digests). Recorded in checkpoints; resuming against other values is refused.
        A subclass extends its parent's dict."""
        return {}

    # --- run folder, seeds, checkpoints ------------------------------------------------------------------

    def start_run(self) -> None:
        """Check that ``__init__`` set what a run needs, seed the processes and, with ``output_dir``, open the run
        folder (resuming from it when asked)."""
        self._check_parts()
        self.seed_processes(self.config.run.seed)
        if self.run_dir is not None:  # the identity is what checkpoints record (a data set digest may take a while)
            self.identity = {k: str(v) for k, v in self.run_identity().items()}
            self.open_run_dir()

    def seed_processes(self, seed: int) -> None:
        """Distinct, reproducible streams per process: the trainer's generator (prompts, seeds, gradient
        windows) and the global ones a ``prompt_fn`` may draw from."""
        rank = self.accelerator.process_index
        set_seed(seed + rank)
        self.rng.manual_seed(seed + rank)

    def capture_state(self) -> TrainingState:
        """Everything :meth:`restore_state` needs to continue this run bit for bit."""
        tensors = {_TRAINED + name: p for name, p in self.trained_parameters().items()}
        meta = {"step": self.global_step, "history": self.log.history, "config": self.config.to_dict(),
                "identity": self.identity, "skipped_batches": self.skipped_batches,
                "evaluation_due": self.evaluation_due}
        if self.ema is not None:
            ema_tensors, meta["ema"] = self.ema.state()
            tensors.update(ema_tensors)
        if self.accelerator.scaler is not None:  # fp16: the loss scale and its growth tracker
            meta["grad_scaler"] = self.accelerator.scaler.state_dict()
        if callable(getattr(self.monitor, "state_dict", None)):
            monitor_tensors, meta["monitor"] = self.monitor.state_dict()
            tensors.update(monitor_tensors)
        extra_tensors, extra_meta = self.extra_state()
        tensors.update(extra_tensors)
        if extra_meta:
            meta["extra"] = extra_meta
        return capture_state(tensors, meta, self.optimizer, {_RNG: self.rng.get_state()})

    def _check_same_run(self, path: Path, meta: dict[str, Any]) -> None:
        if "config" not in meta:  # damaged: an older checkpoint may still do
            raise DamagedCheckpoint(f"{path}/state.json lacks the field(s) ['config']")
        renamed = getattr(type(self.config), "renamed", {})  # a run written before the config was composed
        saved = flat_settings(meta["config"], renamed)
        current = flat_settings(jsonable(self.config.to_dict()))
        check_same_run(path, (saved, current), (meta.get("identity"), self.identity), RESUME_FREE,
                       warn=self.accelerator.is_main_process)

    def _check_contents(self, path: Path, state: TrainingState) -> None:
        expected = [_TRAINED + name for name in self.trained_parameters()]
        if self.ema is not None:
            expected += list(self.ema.state()[0])
        check_contents(path, state, ["history", "config"] + (["ema"] if self.ema is not None else []), expected)

    def restore_state(self, path: Path) -> None:
        """Load checkpoint ``path`` (every process loads the shared state and its own generators); a
        :class:`DamagedCheckpoint` names a missing, damaged or non-finite part."""
        acc = self.accelerator
        state = read_checkpoint(path, acc.process_index)
        self._check_same_run(path, state.meta)  # first: another pipeline's LoRA is not a damaged checkpoint
        self._check_contents(path, state)
        for name, param in self.trained_parameters().items():
            copy_whole_(param, state.tensors[_TRAINED + name])
        same_world = state.meta["world_size"] == acc.num_processes
        if not same_world:
            state.rng_tensors = None  # the streams were per process: new ones below
        try:  # what is nested deeper than _check_contents looks: still named, never a bare KeyError
            state.restore(self.optimizer)
            if self.ema is not None:
                self.ema.load_state(state.tensors, state.meta["ema"])
            if acc.scaler is not None and "grad_scaler" in state.meta:
                acc.scaler.load_state_dict(state.meta["grad_scaler"])
            if self.monitor is not None and "monitor" in state.meta:
                self.monitor.load_state_dict(state.tensors, state.meta["monitor"])
            self.load_extra_state(state.tensors, state.meta.get("extra", {}))
        except KeyError as error:
            raise DamagedCheckpoint(f"{path} lacks {error} (optimizer, EMA or trainer state)") from None
        self.lr_scheduler = lr_schedule(self.config, self.optimizer.optimizer, state.meta["step"])
        self.global_step = self.saved_step = state.meta["step"]
        self.skipped_batches = state.meta.get("skipped_batches", 0)
        self.evaluation_due = bool(state.meta.get("evaluation_due", False))
        self.log.history = state.meta["history"]
        if same_world:
            self.rng.set_state(state.rng_tensors[_RNG])
        else:  # new streams, still reproducible, for the new process count
            if acc.is_main_process:
                warnings.warn(f"{path} was written by {state.meta['world_size']} process(es) and is resumed by "
                              f"{acc.num_processes}: weights, optimizer, schedule and step continue, but prompts and "
                              "noise come from new random streams (seeded by the step)", RuntimeWarning, stacklevel=2)
            self.seed_processes(self.config.run.seed + 7919 * (self.global_step + 1))

    def open_run_dir(self) -> None:
        """Refuse to mix with an earlier run, resume one, or start one. Every process decides from the same files:
        all of them look before the main process changes anything."""
        acc, run_dir = self.accelerator, self.run_dir
        self.run_lock = on_main(acc, lambda: RunLock(run_dir).acquire())  # one live run per folder
        try:
            self._open_locked_run_dir()
        except BaseException:  # a refused resume leaves the folder free for the next try in this process
            self.release_run_dir()
            raise

    def release_run_dir(self) -> None:
        """Let another run (in this process too) open the run folder; the run's state stays as it is."""
        if self.run_lock is not None:
            self.run_lock.release()

    def _open_locked_run_dir(self) -> None:
        acc, run_dir = self.accelerator, self.run_dir
        found = step_folders(run_dir)
        require(not found or self.config.run.resume,
                f"{run_dir} holds checkpoints of an earlier run (newest: {found[-1].name if found else ''}); pass "
                "resume=True (--resume) to continue it, or choose a new output directory")
        acc.wait_for_everyone()
        if acc.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_partial(run_dir)
        if found:
            resume_newest(found, self.restore_state, warn=acc.is_main_process)
        elif self.config.run.resume:
            acc.print(f"no checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        if acc.is_main_process:
            # what this run (or resumption) runs with, as the option: value file that --config reads back
            write_config(run_dir / CONFIG_NAME, option_values(self.config))
        acc.wait_for_everyone()

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step into ``output_dir/checkpoints`` (every process must
        call this), keeping the ``keep_checkpoints`` newest."""
        require(self.run_dir is not None, "save_checkpoint needs output_dir")
        state = self.capture_state()
        check_finite_weights(state.tensors, self.global_step, f"the step-{self.global_step} checkpoint")
        path = write_checkpoint(self.accelerator, self.run_dir, self.global_step, state,
                                self.config.run.keep_checkpoints)
        self.saved_step = self.global_step
        return path

    # --- the loop ----------------------------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> TrainingLog:
        """Train until the step counter reaches ``max_steps`` (default: the config's; a resumed run continues
        from its checkpoint), then write the log, what the subclass writes and a last checkpoint into
        ``output_dir`` (when set). Returns the log. Whatever it raises, the run folder is released first, so a
        new trainer in this process can resume it."""
        try:
            return self._train(max_steps)
        except BaseException:
            self.release_run_dir()
            raise

    def _train(self, max_steps: int | None) -> TrainingLog:
        cfg, acc = self.config, self.accelerator
        steps = cfg.run.max_steps if max_steps is None else max_steps
        start_trackers(acc, cfg.run.tracker_project, flat_settings(cfg.to_dict()))
        bar = progress_bar(total=steps, initial=min(self.global_step, steps), desc=self.name, unit="step",
                           disable=not (cfg.run.progress_bar and acc.is_main_process))
        with StopSignals() as signals:
            stop, grid = False, "its sample grid was cut short (not written)"
            if self.global_step == 0:
                self._unit(signals, grid, self.after_step, True)
                stop = self._evaluate(signals)
            elif self.evaluation_due:  # a resumed run whose monitor was cut short
                stop = self._evaluate(signals)
                self._unit(signals, grid, self.after_step)
            stop = stop or (self.monitor is not None and bool(self.monitor.should_stop)) or self.stop_early()  # resumed
            while self.global_step < steps and not stop:
                cut = f"step {self.global_step + 1} was cut short and runs again on resume"
                if self._unit(signals, cut, self.train_step) is None:  # a dropped batch: no step was taken
                    self._stop_if_asked(signals)
                    continue
                self._skipped_in_row = 0
                self._check_record(self.log.history[-1])
                bar.set_postfix({self.progress_key(): f"{self.log.smoothed_rewards()[-1]:.4f}"})
                bar.update(1)
                stop = self._evaluate(signals) or self.stop_early()
                if cfg.run.save_every and self.global_step % cfg.run.save_every == 0:
                    self.save_checkpoint()
                self._unit(signals, grid, self.after_step)
                if self.global_step < steps and not stop:  # at the end the run finishes instead
                    self._stop_if_asked(signals)
        bar.close()
        self._finish(stopped=stop)
        return self.log

    def _finish(self, stopped: bool = False) -> None:
        acc = self.accelerator
        if stopped and getattr(self.monitor, "should_stop", False):
            self._keep_monitors_best()
        weights = dict(self.trained_parameters())
        if self.ema is not None:
            weights.update(self.ema.state()[0])
        check_finite_weights(weights, self.global_step, "the run's results")
        if self.run_dir is not None and self.config.run.save_every and self.saved_step != self.global_step:
            self.save_checkpoint()  # the state it stopped in, so that a resumed run knows it stopped
        if self.run_dir is not None:
            if acc.is_main_process:
                self.log.write(self.run_dir)
                self._write_monitor(stopped)
            self.write_outputs(self.run_dir)
            acc.wait_for_everyone()
            self.release_run_dir()
        finish_trackers(acc)
