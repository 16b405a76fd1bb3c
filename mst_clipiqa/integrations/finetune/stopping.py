"""Where a diffusion trainer stops on SIGTERM / SIGINT: after a step, or, in one process, already inside a
unit of work (a step's sampling, a monitor evaluation, a sample grid) at its next sampler step. A unit cut short
is given up, its random streams put back (``runtime.preemption.interruptible``), and the checkpoint is the last
finished step's, so that ``--resume`` redoes the unit and continues bit for bit. In several processes every
process must stop after the same step, so there units are never cut."""

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
    # and the base's save_checkpoint(), release_run_dir(), TrainerParts' _watch()

    def _unit(self, signals: StopSignals, cut: str, work: Any, *args: Any) -> Any:
        """``work(*args)``, which a stop request cuts short at its next sampler step (one process only): the
        random streams are put back and the run stops as after the last step, saying what was ``cut``."""
        try:
            with interruptible(self.accelerator.num_processes == 1, self.rng):
                return work(*args)
        except Interrupted:
            self._stop_if_asked(signals, cut)
            raise

    def _evaluate(self, signals: StopSignals) -> bool:
        """The monitor after a step; cut short, it stays due in the checkpoint and runs again on resume."""
        self.evaluation_due = True
        stop = self._unit(signals, "its monitor was cut short and runs again on resume", self._watch)
        self.evaluation_due = False
        return stop

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
