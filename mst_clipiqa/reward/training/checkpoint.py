"""Per-epoch training checkpoints: one safetensors file, written atomically, no pickle.

Tensors: ``model.*`` (trained weights), ``best.*`` (weights of the best epoch
so far), ``ema.*`` (the average of the trained weights, when one is kept),
``optim.<param>.<name>`` (optimizer state) and ``rng.*`` (torch, CUDA and numpy
generator states). JSON metadata: ``progress`` (epoch, history,
anything the trainer needs), ``optim`` (param groups and scalar state) and
``rng`` (numpy position and Python's ``random`` state).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.runtime.state import flatten_optimizer_state, rng_state, set_rng_state, unflatten_optimizer_state

from ..utils import read_tensors, save_tensors

__all__ = ["Checkpoint", "flatten_optimizer_state", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state", "unflatten_optimizer_state"]


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    progress: dict[str, Any]
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]]
    ema_state: dict[str, torch.Tensor]


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _strip(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], best_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, progress: dict[str, Any],
                    ema_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the whole training state to ``path`` atomically (temporary file, then ``os.replace``)."""
    optim_tensors, optim_meta = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    tensors = {**_prefixed("model", model_state), **_prefixed("best", best_state),
               **_prefixed("ema", ema_state or {}), **optim_tensors, **rng_tensors}
    metadata = {"progress": json.dumps(progress), "optim": json.dumps(optim_meta), "rng": json.dumps(rng_meta)}
    save_tensors(tensors, path, metadata)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    tensors, metadata = read_tensors(path, "a checkpoint written by save_checkpoint")
    missing = [k for k in ("progress", "optim", "rng") if k not in metadata]
    if missing:
        raise ValueError(f"checkpoint {path} lacks metadata {missing}; expected a file written by save_checkpoint")
    rng = ({k: v for k, v in tensors.items() if k.startswith("rng.")}, json.loads(metadata["rng"]))
    return Checkpoint(_strip("model", tensors), _strip("best", tensors),
                      unflatten_optimizer_state(tensors, json.loads(metadata["optim"])),
                      json.loads(metadata["progress"]), rng, _strip("ema", tensors))
