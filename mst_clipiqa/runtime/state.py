"""What a checkpoint of any trainer holds: named tensors and JSON metadata shared by every process, and each
process's generators (torch, CUDA, numpy, Python, and a trainer's own) as tensors plus JSON."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .sharding import reshard_optimizer_state, whole_tensors

__all__ = ["TrainingState", "capture_state", "flatten_optimizer_state", "rng_state", "set_rng_state",
           "unflatten_optimizer_state"]


@dataclass
class TrainingState:
    """One process's view of a checkpoint: the shared state and this process's generator states."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor] | None = None
    rng_meta: dict[str, Any] | None = None

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        """Put back the optimizer's state and this process's generators (when the checkpoint holds them)."""
        optimizer.load_state_dict(unflatten_optimizer_state(self.tensors, self.meta["optimizer"]))
        reshard_optimizer_state(optimizer)
        if self.rng_tensors is not None:
            set_rng_state(self.rng_tensors, self.rng_meta)


def capture_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], optimizer: torch.optim.Optimizer,
                  own_rng: dict[str, torch.Tensor] | None = None) -> TrainingState:
    """``tensors`` and ``meta`` with the optimizer's state (``optim.*``, ``meta["optimizer"]``) and this
    process's generators (``own_rng``: a trainer's own, as tensors). Sharded tensors are gathered whole
    (collective: every process calls it)."""
    optim_tensors, meta["optimizer"] = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    shared = whole_tensors({**tensors, **optim_tensors})
    return TrainingState(shared, meta, {**rng_tensors, **(own_rng or {})}, rng_meta)


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
    for key, value in tensors.items():
        if key.startswith("optim."):
            param, name = key.removeprefix("optim.").split(".", 1)
            state.setdefault(int(param), {})[name] = value
    for param, values in meta["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
