"""Processes under a launcher (torchrun, accelerate launch): how many there are, one Accelerator per run, and
what the main process alone does. Shared by the IQA trainer and the diffusion fine-tuners."""
from __future__ import annotations

import atexit
import functools
import os
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list

from .preemption import stop_with_parent
from .sharding import check_sharding, shard_on_cpu, sharding_name

__all__ = ["MainProcessFailed", "launcher_precision", "launcher_rank", "launcher_world_size", "new_accelerator",
           "on_main", "run_environment"]

T = TypeVar("T")


class MainProcessFailed(ValueError):
    """Raised on the other processes when what the main process does alone (see :func:`on_main`) failed."""


def launcher_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launcher_rank() -> int:
    """This process's rank among the launcher's processes (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"  # what `accelerate launch` sets from its flag or config file
_MPI_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launcher_precision(asked: str | None) -> str | None:
    """The mixed precision of a run: the library's own setting (``asked``) when given, else accelerate's
    (``ACCELERATE_MIXED_PRECISION``, which ``accelerate launch`` sets from ``--mixed_precision`` or the accelerate
    config file); None when neither says. ``accelerate launch`` sets ``no`` when nothing asks for more, so a
    launcher's ``no`` never conflicts; any other launcher precision that differs from ``asked`` is an error."""
    launched = os.environ.get(_PRECISION_ENV, "").strip().lower() or None
    if asked is None:
        return launched
    if launched not in (None, "no", asked):
        raise ValueError(f"mixed_precision={asked!r} (this library's --mixed-precision / mixed_precision setting) "
                         f"conflicts with accelerate's mixed_precision={launched!r} ({_PRECISION_ENV}, set by "
                         "`accelerate launch --mixed_precision` or the accelerate config file); give one of them, "
                         "or the same value in both")
    return asked


def _check_launched_alone() -> None:
    """`accelerate launch` with a MULTI_CPU config (or ``--num_processes N`` on the CPU) but no mpirun starts one
    process; it says so nowhere."""
    env = os.environ
    asked_for_several = "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env  # its simple launcher, N > 1
    if asked_for_several and "WORLD_SIZE" not in env and not any(k in env for k in _MPI_SIZES):
        warnings.warn("accelerate launch was asked for several processes on the CPU (a MULTI_CPU config, or "
                      "--num_processes > 1 without --multi_gpu) but started one: it needs mpirun "
                      "(--mpirun_hostfile) for that. This run is one process. For N processes on the CPU use "
                      "`accelerate launch --multi_gpu --num_processes N` (on a machine without CUDA it runs on the "
                      "CPU with gloo) or `torchrun --nproc_per_node N`", RuntimeWarning, stacklevel=3)


def run_environment(accelerator: Accelerator) -> dict[str, object]:
    """What a run actually ran on, for its log and report: process count, device type, precision, sharding."""
    return {"world_size": accelerator.num_processes, "device": accelerator.device.type,
            "distributed_type": accelerator.distributed_type.value, "mixed_precision": accelerator.mixed_precision,
            "sharding": sharding_name(accelerator)}


def new_accelerator(**settings: object) -> Accelerator:
    """An ``Accelerator`` with these settings, even if another one in this process chose others.

    accelerate keeps one process-wide state and refuses new settings; the later
    trainer's settings win (the distributed setup itself is kept). A
    ``mixed_precision`` of None takes the launcher's (see
    :func:`launcher_precision`; a conflict is an error); ``cpu`` is on when
    either the settings or the launcher (``accelerate launch --cpu``) ask for
    it. Under a launcher on a machine without CUDA it runs on the CPU (gloo),
    since accelerate otherwise ignores the launcher there; a launcher whose
    processes still end up alone gets a warning. An FSDP config (version 2)
    shards there too (:func:`~.sharding.shard_on_cpu`); DeepSpeed or FSDP
    version 1 is refused in one line.
    """
    check_sharding()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun starts its workers in sessions of their own
        stop_with_parent()
    # never None: accelerate would keep the precision of an earlier Accelerator in this process
    settings["mixed_precision"] = launcher_precision(settings.get("mixed_precision")) or "no"
    _check_launched_alone()
    world = launcher_world_size()
    if world > 1 and not torch.cuda.is_available():
        settings["cpu"] = True
    try:
        accelerator = Accelerator(**settings)
    except ValueError:
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(**settings)
    if world > 1 and accelerator.num_processes == 1:
        warnings.warn(f"WORLD_SIZE={world} but accelerate runs this as one process "
                      f"({accelerator.distributed_type}): each of the {world} processes does the whole job alone",
                      stacklevel=2)
    if accelerator.num_processes > 1:
        shard_on_cpu(accelerator)
        _end_process_group_at_exit()
    return accelerator


@functools.cache
def _end_process_group_at_exit() -> None:
    atexit.register(end_process_group)


def end_process_group() -> None:
    """Destroy the default process group, if any. At exit the library does it for the groups its Accelerators
    joined: gloo threads still running while the interpreter shuts down abort the process ("terminate called
    without an active exception", exit status -6) after work that succeeded."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def on_main(accelerator: Accelerator, work: Callable[[], T]) -> T | None:
    """``work()`` on the main process alone; every process waits for it, and fails if it failed.

    Returns what ``work()`` returned on the main process and None on the
    others. A ``ValueError`` there becomes :class:`MainProcessFailed`
    elsewhere, with the same message.
    """
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = work()
        except Exception as caught:  # every process must hear of it, or the others wait forever
            error = caught
    if accelerator.num_processes > 1:
        outcome = [None if error is None else (isinstance(error, ValueError), f"{error}")]
        broadcast_object_list(outcome)
        if outcome[0] is not None and error is None:
            is_value_error, message = outcome[0]
            raise (MainProcessFailed if is_value_error else RuntimeError)(message)
    if error is not None:
        raise error
    return result
