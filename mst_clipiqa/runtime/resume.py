"""What a resume checks before it continues a run: the same settings and identity as the run that wrote the
checkpoint, every tensor a restore reads, and the newest usable checkpoint of several."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from .checkpoints import DamagedCheckpoint

__all__ = ["check_same_run", "missing_optimizer_tensors", "resume_newest"]

T = TypeVar("T")


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


def missing_optimizer_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> list[str]:
    """The optimizer state is per parameter and alike for all of them (AdamW: step, exp_avg, exp_avg_sq): the
    names some parameter lacks that another one has."""
    names: dict[int, set[str]] = {}
    for key in tensors:
        if key.startswith("optim."):
            param, name = key.removeprefix("optim.").split(".", 1)
            names.setdefault(int(param), set()).add(name)
    if not names:
        return []
    params = [p for group in meta.get("optimizer", {}).get("param_groups", []) for p in group.get("params", [])]
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
