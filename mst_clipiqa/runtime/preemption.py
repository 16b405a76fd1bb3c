"""Stopping a run at a safe point when SIGTERM (Slurm, Kubernetes) or SIGINT (Ctrl-C) arrives.

A trainer runs its loop inside :class:`StopSignals`; the handler only records the signal. At each safe point
(after an optimizer step; before each batch of a reward-model epoch, which is then given up) the trainer asks
:meth:`StopSignals.requested`, which agrees across every process of a run, writes a checkpoint and raises
:class:`Preempted`. A second signal interrupts at once. Long
phases between safe points (encoding a feature cache, exporting pairs) ask :func:`stop_requested` after each unit
of kept work and stop there, in this process. Inside a unit whose work is thrown away when cut short (a
training step's sampling, a monitor evaluation, a sample grid), the trainer opens :func:`interruptible` and the
unit's inner loops (sampler steps, image chunks) call :func:`interruption_point`, which raises
:class:`Interrupted`; the trainer then puts its random streams back as they were before the unit, so that the
checkpoint it writes resumes bit for bit. In a run of several processes each point asks every process (a
collective), so that all of them give the unit up at the same point.
"""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "Preempted", "StopSignals", "interruptible", "interruption_point", "stop_requested",
           "stop_with_parent"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_ACTIVE: list[StopSignals] = []  # the contexts entered in this process, innermost last
_BLOCKS = threading.local()  # per thread: the interruptible blocks it entered, whether each one may be cut


def stop_requested() -> int:
    """The signal the innermost active :class:`StopSignals` of this process received (0: none, or no context)."""
    return _ACTIVE[-1].received if _ACTIVE else 0


class Interrupted(Exception):
    """A stop request cut a unit of work short at an :func:`interruption_point`: its results are to be thrown
    away (a trainer catches it, and stops as at a safe point)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} inside a unit of work")
        self.signum = signum


@contextmanager
def interruptible(enabled: bool = True, generator: Any = None,
                  requested: Callable[[], int] | None = None) -> Iterator[None]:
    """Inside the block, :func:`interruption_point` raises :class:`Interrupted` once a stop is requested (the
    block's work must be worth nothing when cut short); it then puts every random stream (torch's, CUDA's,
    numpy's, Python's and the torch ``generator``) back as it was when the block began, so that redoing the
    block draws the same. ``enabled=False`` opens a block that is never cut. ``requested``: what each point
    asks (default :func:`stop_requested`, this process); a run of several processes passes one that agrees
    across them (e.g. ``lambda: signals.requested(accelerator)``), and then every process must pass the same
    points in the same order."""
    from .checkpoints import rng_state, set_rng_state

    streams = (rng_state(), generator.get_state() if generator is not None else None) if enabled else None
    blocks = _BLOCKS.__dict__.setdefault("open", [])
    blocks.append((enabled, requested or stop_requested))
    try:
        yield
    except Interrupted:
        set_rng_state(*streams[0])
        if generator is not None:
            generator.set_state(streams[1])
        raise
    finally:
        blocks.pop()


def interruption_point() -> None:
    """Between the inner pieces of a long unit (a sampler step, a chunk of images): raise :class:`Interrupted`
    when a stop was requested inside an :func:`interruptible` block of this thread; anywhere else, nothing."""
    blocks = getattr(_BLOCKS, "open", None)
    if blocks and blocks[-1][0] and (signum := blocks[-1][1]()):
        raise Interrupted(signum)


class Preempted(Exception):
    """A run stopped at a safe point because of a signal; the message says how to continue it.
    ``exit_status`` is what a shell reports for the signal (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context that records SIGTERM / SIGINT instead of dying, and restores the earlier handlers on exit.
    Outside the main thread (where handlers cannot be set) it records nothing."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:  # asked twice: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def requested(self, accelerator: Any | None = None) -> int:
        """The signal any process received (0: none); collective when ``accelerator`` runs several processes, so
        that every process stops after the same step."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.received
        import torch

        flag = torch.tensor([self.received], device=accelerator.device)
        return int(accelerator.reduce(flag, "max").item())

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name


def stop_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have Linux send this process ``signum`` when its parent dies (``PR_SET_PDEATHSIG``); returns whether it
    could. torchrun's workers run in sessions of their own, so a SIGKILL to torchrun's process group missed them
    and they trained on alone; now they get SIGTERM and stop at their next safe point, with a checkpoint."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    return ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) == 0
