"""Stopping a run at a safe point on SIGTERM (Slurm, Kubernetes) or SIGINT (Ctrl-C): :class:`StopSignals` records
the signal, the trainer checkpoints at its next safe point and raises :class:`Preempted`. A unit of work thrown
away when cut short (a step's sampling) runs in :func:`interruptible`, whose :func:`interruption_point` raises
:class:`Interrupted`; the unit runs again on resume, seeded as it was (``checkpoints.reseed``)."""
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

_ACTIVE: list[StopSignals] = []  # the contexts entered in this process, innermost last
_BLOCKS = threading.local()  # per thread: what each interruptible block it entered asks


def stop_requested() -> int:
    """The signal the innermost active :class:`StopSignals` of this process received (0: none, or no context)."""
    return _ACTIVE[-1].received if _ACTIVE else 0


class Interrupted(Exception):
    """A stop request cut a unit of work short at an :func:`interruption_point`: its results are thrown away."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} inside a unit of work")
        self.signum = signum


class Preempted(Exception):
    """A run stopped at a safe point because of a signal: ``stopped by <signal> <where>``, where ``where`` says how
    to continue it. ``exit_status`` is what a shell reports for the signal (143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int, where: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")
        self.signum, self.exit_status = signum, 128 + signum


@contextmanager
def interruptible(requested: Callable[[], int] | None = None) -> Iterator[None]:
    """A block whose :func:`interruption_point` raises :class:`Interrupted` once a stop is ``requested``
    (default :func:`stop_requested`; several processes pass one that agrees across them and pass the same
    points)."""
    blocks = _BLOCKS.__dict__.setdefault("open", [])
    blocks.append(requested or stop_requested)
    try:
        yield
    finally:
        blocks.pop()


def interruption_point() -> None:
    """Raise :class:`Interrupted` when a stop was requested inside an :func:`interruptible` block of this thread;
    anywhere else, nothing."""
    blocks = getattr(_BLOCKS, "open", None)
    if blocks and (signum := blocks[-1]()):
        raise Interrupted(signum)


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
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def requested(self, accelerator: Any | None = None) -> int:
        """The signal any process received (0: none); collective when ``accelerator`` runs several processes."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.received
        import torch

        flag = torch.tensor([self.received], device=accelerator.device)
        return int(accelerator.reduce(flag, "max").item())


def stop_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have Linux send this process ``signum`` when its parent dies (``PR_SET_PDEATHSIG``); whether it could.
    torchrun's workers run in sessions of their own, which a SIGKILL to torchrun's process group misses."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    return ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) == 0
