"""The one checkpoint format of every trainer, ``RUN/checkpoints/step_XXXXXXXX/`` (docs/architecture.md says
what each file holds), what it holds (:class:`TrainingState`) and what a resume checks: safetensors and JSON only."""
from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate.utils import set_seed

from mst_clipiqa.reward.utils import nonfinite_names, read_tensors, write_json
from mst_clipiqa.reward.utils.files import write_safetensors

from .sharding import reshard_optimizer_state, whole_tensors

__all__ = ["CHECKPOINTS", "DamagedCheckpoint", "TrainingState", "capture_state", "check_same_run",
           "complete_checkpoints", "flatten_optimizer_state", "key_seeds", "read_checkpoint", "reseed", "resume_newest",
           "step_folders", "unflatten_optimizer_state", "write_checkpoint"]

T = TypeVar("T")

CHECKPOINTS = "checkpoints"
STATE, META = "state.safetensors", "state.json"
_PREFIX, _PARTIAL = "step_", ".tmp"


class DamagedCheckpoint(ValueError):
    """A checkpoint folder with a missing, truncated or inconsistent file, or NaN / inf tensors."""


@dataclass
class TrainingState:
    """What a checkpoint holds: named tensors (the optimizer's as ``optim.*``) and JSON (``meta``)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        """Put back the optimizer's state."""
        optimizer.load_state_dict(unflatten_optimizer_state(self.tensors, self.meta["optimizer"]))
        reshard_optimizer_state(optimizer)


def capture_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                  optimizer: torch.optim.Optimizer) -> TrainingState:
    """``tensors`` and ``meta`` with the optimizer's state (``optim.*``, ``meta["optimizer"]``). Collective when
    weights are sharded."""
    optim_tensors, meta["optimizer"] = flatten_optimizer_state(optimizer.state_dict())
    return TrainingState(whole_tensors({**tensors, **optim_tensors}), meta)


def key_seeds(key: Sequence[int], n: int) -> list[int]:
    """``n`` seeds derived from ``key`` (numpy's ``SeedSequence``): other keys give unrelated seeds."""
    return [int(s) for s in np.random.SeedSequence(list(key)).generate_state(n)]


def reseed(*key: int, generator: torch.Generator | None = None) -> None:
    """Seed every generator training draws from (torch, CUDA, numpy, Python, and ``generator`` apart) from ``key``,
    e.g. (seed, step, process): a unit of work seeded by its key draws alike in a straight and a resumed run, so
    checkpoints hold no generator state."""
    shared, own = key_seeds(key, 2)
    set_seed(shared)
    if generator is not None:
        generator.manual_seed(own)


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's ``state_dict`` as ``optim.<param>.<name>`` tensors and JSON (groups, scalars)."""
    tensors, scalars = {}, {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param}.{name}"] = value
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``state_dict`` :func:`flatten_optimizer_state` flattened (other tensors are left out)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            param, name = key.removeprefix("optim.").split(".", 1)
            state.setdefault(int(param), {})[name] = value
    for param, values in meta["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _step(path: Path) -> int:
    return int(path.name[len(_PREFIX):])


def step_folders(run_dir: str | Path) -> list[Path]:
    """Every published checkpoint folder in ``run_dir``, complete or not, oldest first (``.tmp`` left out)."""
    found = (Path(run_dir) / CHECKPOINTS).glob(f"{_PREFIX}*")
    return sorted((p for p in found if p.is_dir() and p.name[len(_PREFIX):].isdigit()), key=_step)


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints in ``run_dir``, oldest first (``.tmp`` and damaged folders left out)."""
    return [p for p in step_folders(run_dir) if _complete(p)]


def _complete(path: Path) -> bool:
    try:
        return isinstance(json.loads((path / META).read_text()), dict) and (path / STATE).is_file()
    except (OSError, ValueError):
        return False


def _fsync_folder(path: Path) -> None:
    # Data on disk before the rename makes it visible, so a crash of the machine cannot publish empty files.
    for item in [*path.iterdir(), path]:
        handle = os.open(item, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_checkpoint(accelerator: Any, run_dir: str | Path, state: TrainingState, keep: int) -> Path:
    """Write ``state`` as ``step_<its meta's step>``, then keep only the ``keep`` newest checkpoints. Collective:
    every process must call it."""
    final = Path(run_dir) / CHECKPOINTS / f"{_PREFIX}{state.meta['step']:08d}"
    partial, main = final.with_name(final.name + _PARTIAL), accelerator.is_main_process
    if main:
        for stale in final.parent.glob(f"{_PREFIX}*{_PARTIAL}"):  # this step's, or one a killed run left
            shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir(parents=True)
        write_safetensors(state.tensors, partial / STATE)
        write_json(partial / META, state.meta)
        _fsync_folder(partial)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint(path: str | Path, fields: Collection[str] = ()) -> TrainingState:
    """Checkpoint ``path``. Every process checks every file, so all agree on whether it is usable: a
    :class:`DamagedCheckpoint` names the file and what is wrong or missing (of ``fields`` in ``state.json``, or one of
    a parameter's optimizer tensors)."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as error:
        raise DamagedCheckpoint(f"{path / META} cannot be read ({error})") from None
    if missing := [k for k in ["step", "optimizer", *fields] if not isinstance(meta, dict) or k not in meta]:
        raise DamagedCheckpoint(f"{path / META} lacks the field(s) {missing}")
    if meta["step"] != _step(path):  # a renamed or copied folder: which step it holds is not guessed
        raise ValueError(f"checkpoint folder {path} is named for step {_step(path)} but records step "
                         f"{meta['step']}; expected {_PREFIX}{meta['step']:08d} (rename it back, or remove it)")
    try:
        tensors, _ = read_tensors(path / STATE, "a file of a training checkpoint")
    except ValueError as error:
        raise DamagedCheckpoint(str(error)) from None
    if bad := nonfinite_names(tensors):
        raise DamagedCheckpoint(f"{path / STATE} holds NaN or inf in {len(bad)} tensor(s), first: {bad[:3]}")
    optim = unflatten_optimizer_state(tensors, {"scalars": {}, "param_groups": []})["state"]
    every = set().union(*optim.values())  # Adam keeps the same tensors for each parameter it stepped, none for others
    missing = [f"optim.{p}.{n}" for p in sorted(optim) for n in sorted(every - set(optim[p]))]
    if missing:
        raise DamagedCheckpoint(f"{path / STATE} lacks {len(missing)} optimizer tensor(s), first: {missing[:3]}")
    return TrainingState(tensors, meta)


def check_same_run(path: Path, settings: tuple[Mapping[str, Any], Mapping[str, Any]],
                   identity: tuple[Mapping[str, str] | None, Mapping[str, str]], resume_free: Collection[str]) -> None:
    """Refuse, in one line naming every difference, a checkpoint at ``path`` written with other settings
    (``(saved, current)`` flat settings; those in ``resume_free`` may change) or against something else
    (``(recorded, current)`` identities, field by field; None: the checkpoint records none)."""
    (saved, current), (recorded, now) = settings, identity
    if recorded is None and now:
        raise ValueError(f"cannot resume from {path}: it records no identity (written by a release before "
                         "checkpoints did), so what it was trained against cannot be checked; start a new run in "
                         "another output folder")
    recorded = recorded or {}
    differing = sorted(k for k in current if k not in resume_free and saved.get(k) != current[k])
    changed = [f"{k}: {recorded.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in sorted({*recorded, *now})
               if recorded.get(k) != now.get(k)]
    problems = ([f"it was trained against something else ({'; '.join(changed)})"] if changed else []) + (
        [f"{differing} differ from the run that wrote it"] if differing else [])
    if problems:
        raise ValueError(f"cannot resume from {path}: {' and '.join(problems)}; expected the same models, data and "
                         f"settings (only {', '.join(resume_free)} may change), or start a new run in another "
                         "output folder")


def resume_newest(found: list[Path], restore: Callable[[Path], T], warn: bool = True) -> T:
    """``restore`` the newest usable of the checkpoints ``found`` (oldest first): a damaged one is named in a
    warning (``warn``: on this process) and the next older one tried. A failed restore must be undone by the
    next one's, which sets everything again."""
    damaged = []
    for path in reversed(found):
        try:
            return restore(path)
        except DamagedCheckpoint as error:
            damaged.append(path.name)
            if warn:
                warnings.warn(f"checkpoint {path} is damaged ({error}); trying the next older one", RuntimeWarning,
                              stacklevel=3)
    raise ValueError(f"every checkpoint in {found[0].parent} is damaged ({', '.join(damaged)}; see the warnings); "
                     "expected at least one complete checkpoint to resume from (or start a new run in another output "
                     "folder)")
