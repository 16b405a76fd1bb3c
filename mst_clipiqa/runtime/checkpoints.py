"""The one checkpoint format of every trainer (the IQA trainer's epochs, the generator trainers' steps), and what a
resume checks: safetensors and JSON only, never a pickle.

accelerate's ``save_state`` writes the optimizer, the LR scheduler and every
process's RNG states with ``torch.save`` (pickles, and ``load_state`` unpickles
them), and the whole model rather than its trained part. A checkpoint here holds
the same state (a :class:`~.state.TrainingState`) in safe formats:

    RUN/checkpoints/step_00000010/
        state.safetensors   trained weights, optimizer tensors, EMA weights (written by the main process)
        state.json          step, world size, and what the trainer records (log, settings, identity)
        rng_<rank>.safetensors   each process's generators (torch, CUDA, numpy, Python, the trainer's own)

Every file is written into ``step_XXXXXXXX.tmp`` and the folder is renamed once
all processes are done, so a killed run leaves either a complete checkpoint or
a ``.tmp`` folder that is ignored; the ``keep`` newest are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from mst_clipiqa.reward.utils import nonfinite_names, read_tensors, write_json
from mst_clipiqa.reward.utils.files import write_safetensors

from .state import TrainingState

__all__ = ["CHECKPOINTS", "DamagedCheckpoint", "check_contents", "check_same_run", "complete_checkpoints",
           "read_checkpoint", "remove_partial", "resume_newest", "step_folders", "write_checkpoint"]

T = TypeVar("T")

CHECKPOINTS = "checkpoints"
STATE, META = "state.safetensors", "state.json"
_PREFIX, _PARTIAL = "step_", ".tmp"
_FIELDS = ("step", "world_size")


class DamagedCheckpoint(ValueError):
    """A checkpoint folder with a missing, truncated or inconsistent file, or NaN / inf tensors."""


def _rng_file(rank: int) -> str:
    return f"rng_{rank}.safetensors"


def _step(path: Path) -> int:
    return int(path.name[len(_PREFIX):])


def _is_complete(path: Path) -> bool:
    try:
        world = json.loads((path / META).read_text())["world_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (path / STATE).is_file() and all((path / _rng_file(r)).is_file() for r in range(world))


def step_folders(run_dir: str | Path) -> list[Path]:
    """Every published checkpoint folder in ``run_dir``, complete or not, oldest first (``.tmp`` left out)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=_step)


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints in ``run_dir``, oldest first (``.tmp`` and damaged folders left out)."""
    return [p for p in step_folders(run_dir) if _is_complete(p)]


def remove_partial(run_dir: str | Path) -> None:
    """Delete the ``.tmp`` folders a killed run left behind (main process only)."""
    root = Path(run_dir) / CHECKPOINTS
    for path in root.glob(f"{_PREFIX}*{_PARTIAL}") if root.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


def _fsync_folder(path: Path) -> None:
    # Data on disk before the rename makes it visible, so a crash of the machine cannot publish empty files.
    for item in [*path.iterdir(), path]:
        handle = os.open(item, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_checkpoint(accelerator: Any, run_dir: str | Path, step: int, state: TrainingState, keep: int) -> Path:
    """Write ``state`` (every process passes its own generator states) as ``step_<step>``, then keep only the
    ``keep`` newest checkpoints. Collective: every process must call it."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"{_PREFIX}{step:08d}"
    partial = final.with_name(final.name + _PARTIAL)
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_safetensors(state.rng_tensors, partial / _rng_file(accelerator.process_index),
                      metadata={"rng": json.dumps(state.rng_meta)})
    if main:
        write_safetensors(state.tensors, partial / STATE)
        write_json(partial / META, {**state.meta, "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if main:
        _fsync_folder(partial)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as error:
        raise DamagedCheckpoint(f"{path / META} cannot be read ({error})") from None
    missing = [k for k in _FIELDS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DamagedCheckpoint(f"{path / META} lacks the field(s) {missing}")
    if meta["step"] != _step(path):
        # a renamed or copied folder: which step it holds is not known, so it is not guessed
        raise ValueError(f"checkpoint folder {path} is named for step {_step(path)} but records step "
                         f"{meta['step']}; expected {_PREFIX}{meta['step']:08d} (rename it back, or remove it)")
    return meta


def _read(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        return read_tensors(file, "a file of a training checkpoint")
    except (OSError, ValueError) as error:
        raise DamagedCheckpoint(str(error)) from None


def read_checkpoint(path: str | Path, rank: int) -> TrainingState:
    """The shared state of checkpoint ``path`` and process ``rank``'s generator states (None when the
    checkpoint was written by fewer processes). Every process checks every file, so all of them agree on whether
    the checkpoint is usable: a :class:`DamagedCheckpoint` names the file and what is wrong with it (a folder named
    for another step than it records is a plain ``ValueError``)."""
    path = Path(path)
    meta = _read_meta(path)
    tensors, _ = _read(path / STATE)
    bad = nonfinite_names(tensors)
    if bad:
        raise DamagedCheckpoint(f"{path / STATE} holds NaN or inf in {len(bad)} tensor(s), first: {bad[:3]}")
    rngs = [_read(path / _rng_file(r)) for r in range(meta["world_size"])]
    if rank >= meta["world_size"]:
        return TrainingState(tensors, meta)
    rng_tensors, rng_meta = rngs[rank]
    if "rng" not in rng_meta:
        raise DamagedCheckpoint(f"{path / _rng_file(rank)} lacks its 'rng' metadata")
    return TrainingState(tensors, meta, rng_tensors, json.loads(rng_meta["rng"]))


def check_same_run(path: Path, settings: tuple[Mapping[str, Any], Mapping[str, Any]],
                   identity: tuple[Mapping[str, str] | None, Mapping[str, str]], resume_free: Collection[str],
                   warn: bool = True) -> None:
    """Refuse, in one line naming every difference, a checkpoint at ``path`` written with other settings
    (``(saved, current)`` flat settings; those in ``resume_free`` may change) or against something else
    (``(recorded, current)`` identities, field by field). A checkpoint that recorded no identity (older versions)
    is taken with a warning (``warn``: on this process)."""
    (saved, current), (recorded, now) = settings, identity
    differing = sorted(k for k in current if k not in resume_free and saved.get(k) != current[k])
    if recorded is None:
        recorded = dict(now)
        if now and warn:
            warnings.warn(f"{path} records no identity (written by an older version): what it was trained against "
                          "cannot be checked", RuntimeWarning, stacklevel=3)
    changed = [f"{k}: {recorded.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in sorted({*recorded, *now})
               if recorded.get(k) != now.get(k)]
    problems = ([f"it was trained against something else ({'; '.join(changed)})"] if changed else []) + (
        [f"{differing} differ from the run that wrote it"] if differing else [])
    if problems:
        raise ValueError(f"cannot resume from {path}: {' and '.join(problems)}; expected the same models, data and "
                         f"settings (only {', '.join(resume_free)} may change), or start a new run in another "
                         "output folder")


def check_contents(path: Path, state: TrainingState, fields: list[str], tensors: list[str]) -> None:
    """Every field of ``state.json`` and every tensor a restore reads (``tensors``, and the optimizer's), named in
    a :class:`DamagedCheckpoint` when missing (never a raw ``KeyError``)."""
    missing = [k for k in ["optimizer", *fields] if k not in state.meta]
    if missing:
        raise DamagedCheckpoint(f"{path}/{META} lacks the field(s) {missing}")
    missing = [k for k in tensors if k not in state.tensors] + _missing_optimizer_tensors(state)
    if missing:
        raise DamagedCheckpoint(f"{path} lacks {len(missing)} tensor(s) of the trained weights or their "
                                f"optimizer state, first: {missing[:3]}")


def _missing_optimizer_tensors(state: TrainingState) -> list[str]:
    """The optimizer state is per parameter and alike for all of them (AdamW: step, exp_avg, exp_avg_sq): the
    names some parameter lacks that another one has."""
    names: dict[int, set[str]] = {}
    for key in state.tensors:
        if key.startswith("optim."):
            param, name = key.removeprefix("optim.").split(".", 1)
            names.setdefault(int(param), set()).add(name)
    if not names:
        return []
    params = [p for group in state.meta["optimizer"].get("param_groups", []) for p in group.get("params", [])]
    every = set().union(*names.values())
    return [f"optim.{p}.{n}" for p in sorted(set(params) | set(names)) for n in sorted(every - names.get(p, set()))]


def resume_newest(found: list[Path], restore: Callable[[Path], T], warn: bool = True) -> T:
    """``restore`` the newest usable of the checkpoints ``found`` (oldest first): a damaged one is named in a
    warning (``warn``: on this process) and the next older one tried; every process reads every file, so all of
    them choose the same one. A failed restore must be undone by the next one's, which sets everything again."""
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
