"""Processes under a launcher (torchrun, accelerate launch): how many, one Accelerator per run, and what the
main process alone does."""
from __future__ import annotations

import atexit
import gc
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
           "on_main", "run_environment", "warn_if_alone"]

T = TypeVar("T")
_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"  # what `accelerate launch` sets from its flag or config file


class MainProcessFailed(ValueError):
    """Raised on the other processes when what the main process does alone (see :func:`on_main`) failed."""


def launcher_world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launcher_rank() -> int:
    """This process's rank among the launcher's processes (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def launcher_precision(asked: str | None) -> str | None:
    """The mixed precision of a run: ``asked`` (the library's setting), else what ``accelerate launch`` set
    (whose ``no`` never conflicts), else None; a launcher precision other than ``asked`` is an error."""
    launched = os.environ.get(_PRECISION_ENV, "").strip().lower() or None
    if asked is None or launched in (None, "no", asked):
        return asked or launched
    raise ValueError(f"mixed_precision={asked!r} (this library's --mixed-precision / mixed_precision setting) "
                     f"conflicts with accelerate's mixed_precision={launched!r} ({_PRECISION_ENV}, set by "
                     "`accelerate launch --mixed_precision` or the accelerate config file); give one of them, or "
                     "the same value in both")


def run_environment(accelerator: Accelerator) -> dict[str, object]:
    """What a run actually ran on, for its log and report: process count, device type, precision, sharding."""
    return {"world_size": accelerator.num_processes, "device": accelerator.device.type,
            "distributed_type": accelerator.distributed_type.value, "mixed_precision": accelerator.mixed_precision,
            "sharding": sharding_name(accelerator)}


def new_accelerator(**settings: object) -> Accelerator:
    """An ``Accelerator`` with these settings, even if an earlier one in this process chose others (accelerate
    keeps one process-wide state). ``mixed_precision`` None takes the launcher's. Under a launcher without CUDA
    it runs on the CPU (gloo), an FSDP config (version 2) shards there too; DeepSpeed or FSDP 1 is refused."""
    check_sharding()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun starts its workers in sessions of their own
        stop_with_parent()
    # never None: accelerate would keep the precision of an earlier Accelerator in this process
    settings["mixed_precision"] = launcher_precision(settings.get("mixed_precision")) or "no"
    if launcher_world_size() > 1 and not torch.cuda.is_available():
        settings["cpu"] = True
    try:
        accelerator = Accelerator(**settings)
    except ValueError:
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(**settings)
    warn_if_alone(accelerator)
    shard_on_cpu(accelerator)
    return accelerator


def warn_if_alone(accelerator: Accelerator) -> None:
    """Warn when a launcher started several processes but ``accelerator`` runs alone: each process would do the
    whole job on its own, into the same output folder."""
    env = os.environ  # `accelerate launch` sets MASTER_ADDR, not WORLD_SIZE, for several CPU processes without mpirun
    if accelerator.num_processes == 1 and (launcher_world_size() > 1 or "ACCELERATE_USE_CPU" in env and
                                           "MASTER_ADDR" in env):
        warnings.warn("the launcher asked for several processes, but this Accelerator runs alone: each process does "
                      "the whole job on its own. On the CPU use `accelerate launch --multi_gpu --num_processes N` "
                      "(gloo; --multi_cpu needs mpirun) or `torchrun`, and an Accelerator of your own built first, "
                      "with cpu=True", RuntimeWarning, stacklevel=3)


@atexit.register
def end_process_group() -> None:
    """At exit, destroy the default process group, if any, and stop its backend's threads while the interpreter
    still runs: a gloo thread that frees the last collective's tensors once shutdown has begun aborts a process
    that succeeded (exit status -6)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    group = torch.distributed.group.WORLD
    torch.distributed.destroy_process_group()
    gc.collect()  # what still holds the group in a reference cycle, such as a DDP module
    del group  # released last, unless something live holds it: the destructor joins without the GIL a thread needs


def on_main(accelerator: Accelerator, work: Callable[[], T]) -> T | None:
    """``work()`` on the main process alone (its result there, None elsewhere); every process waits for it and
    fails if it failed, the others with a :class:`MainProcessFailed` that carries its message."""
    result, failure = None, [None]
    if accelerator.is_main_process:
        try:
            result = work()
        except Exception as error:  # every process must hear of it, or the others wait forever
            result, failure = error, [f"{error}"]
    if accelerator.num_processes > 1:
        broadcast_object_list(failure)
    if failure[0] is not None:
        raise result if accelerator.is_main_process else MainProcessFailed(failure[0])
    return result
