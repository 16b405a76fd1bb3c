"""Where a diffusion trainer stops on SIGTERM / SIGINT: after a step, or already inside a unit of work (a step's
sampling, a monitor evaluation, a sample grid) at its next sampler step. A unit cut short is given up, its
random streams put back (``runtime.preemption.interruptible``), and the checkpoint is the last finished step's,
so that ``--resume`` redoes the unit and continues bit for bit. In several processes every process must give up
the same unit at the same point: each sampler step of a unit every process runs asks all of them (one small
all-reduce), and the sample grid, which the main process draws alone, is cut there and agreed on after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.runtime.checkpoints import step_folders
from mst_clipiqa.runtime.preemption import Interrupted, Preempted, StopSignals, interruptible

from .tracking import finish_trackers

__all__ = ["StopPoints"]


class StopPoints:
    """Mixed into :class:`~.base.DiffusionTrainer`, whose loop runs each unit through :meth:`_unit` and asks
    :meth:`_stop_if_asked` after each step."""

    accelerator: Any
    rng: torch.Generator
    run_dir: Path | None
    global_step: int
    saved_step: int
    evaluation_due: bool  # the monitor of the current step is still to run (a stop cut it short)
    samples_due: bool  # the sample grid of the current step is still to draw
    # and the base's save_checkpoint(), release_run_dir(), TrainerParts' _watch() and after_step()

    def _unit(self, signals: StopSignals, cut: str, work: Any, *args: Any, alone: bool = False) -> Any:
        """``work(*args)``, which a stop request cuts short at its next sampler step: the random streams are put
        back and the run stops as after the last step, saying what was ``cut``. Every process runs ``work``
        through the same sampler steps, except with ``alone`` (the main process works, the others wait)."""
        acc = self.accelerator
        several = acc.num_processes > 1
        requested = (lambda: signals.requested(acc)) if several and not alone else None
        given_up, result = False, None
        try:
            with interruptible(True, self.rng, requested):
                result = work(*args)
        except Interrupted:
            given_up = True
        if alone and several:  # the others learn whether the main process gave its unit up
            given_up = bool(acc.reduce(torch.tensor([int(given_up)], device=acc.device), "max").item())
        if given_up:  # only a stop request gives a unit up: this raises Preempted
            self._stop_if_asked(signals, cut)
        return result

    def _evaluate(self, signals: StopSignals) -> bool:
        """The monitor after a step; cut short, it stays due in the checkpoint and runs again on resume."""
        self.evaluation_due = True
        stop = self._unit(signals, "its monitor was cut short and runs again on resume", self._watch)
        self.evaluation_due = False
        return stop

    def _draw_samples(self, signals: StopSignals, first: bool = False) -> None:
        """The sample grid after a step (the main process draws it); cut short, it stays due in the checkpoint
        and is drawn on resume."""
        self.samples_due = True
        self._unit(signals, "its sample grid was cut short and is drawn on resume", self.after_step, first,
                   alone=True)
        self.samples_due = False

    def _stop_if_asked(self, signals: StopSignals, cut: str = "") -> None:
        """After a step (or a unit ``cut`` short): when any process got SIGTERM / SIGINT, checkpoint and raise
        :class:`Preempted` on all."""
        signum = signals.requested(self.accelerator)
        if not signum:
            return
        name, cut = StopSignals.name(signum), f" ({cut})" if cut else ""
        if self.run_dir is None:
            message = f"stopped by {name} at step {self.global_step}{cut}; nothing saved (no output_dir)"
        elif self.global_step == 0 and not step_folders(self.run_dir):
            message = f"stopped by {name} at step 0{cut}; nothing trained yet: run the same command again to start"
        else:
            if self.saved_step != self.global_step:
                self.save_checkpoint()
            message = (f"stopped by {name} at step {self.global_step}{cut}; checkpoint written to {self.run_dir}; "
                       "run the same command again with --resume (resume=True) to continue")
        self.release_run_dir()
        finish_trackers(self.accelerator)
        raise Preempted(signum, message)
