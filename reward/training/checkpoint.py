"""Per-epoch training checkpoints: one safetensors file, written atomically, no pickle.

Tensors: ``model.*`` (trained weights), ``best.*`` (weights of the best epoch
so far), ``optim.<param>.<name>`` (optimizer state) and ``rng.*`` (torch, CUDA
and numpy generator states). JSON metadata: ``progress`` (epoch, history,
anything the trainer needs), ``optim`` (param groups and scalar state) and
``rng`` (numpy position and Python's ``random`` state).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from .feature_cache import atomic_save


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    progress: dict[str, Any]
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]]


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _strip(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every generator training might draw from (torch, CUDA, numpy, Python)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, state, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [version, list(state), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = meta["python"]
    random.setstate((version, tuple(state), gauss_next))


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for param, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param}.{name}"] = value
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in _strip("optim", tensors).items():
        param, name = key.split(".", 1)
        state.setdefault(int(param), {})[name] = value
    for param, values in meta["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], best_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    """Write the whole training state to ``path`` atomically (temporary file, then ``os.replace``)."""
    optim_tensors, optim_meta = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    tensors = {**_prefixed("model", model_state), **_prefixed("best", best_state), **optim_tensors, **rng_tensors}
    metadata = {"progress": json.dumps(progress), "optim": json.dumps(optim_meta), "rng": json.dumps(rng_meta)}
    atomic_save(tensors, Path(path), metadata)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot read checkpoint {path}: {error}; expected a file written by "
                         "save_checkpoint") from None
    missing = [k for k in ("progress", "optim", "rng") if k not in metadata]
    if missing:
        raise ValueError(f"checkpoint {path} lacks metadata {missing}; expected a file written by save_checkpoint")
    rng = ({k: v for k, v in tensors.items() if k.startswith("rng.")}, json.loads(metadata["rng"]))
    return Checkpoint(_strip("model", tensors), _strip("best", tensors),
                      unflatten_optimizer_state(tensors, json.loads(metadata["optim"])),
                      json.loads(metadata["progress"]), rng)
