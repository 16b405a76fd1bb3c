"""A model sharded over the processes (accelerate's FSDP2, torch's ``fully_shard``): whether a run shards, and
its sharded tensors (``DTensor``) as whole tensors and back, for checkpoints, the EMA and saved weights.
accelerate never shards several CPU processes, though ``fully_shard`` runs there on gloo: :func:`shard_on_cpu`
lets the same config shard there, so that the CPU tests run what runs on GPUs."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, parse_flag_from_env

__all__ = ["check_sharding", "copy_whole_", "is_sharded", "reshard_after_every_forward",
           "reshard_optimizer_state", "shard_on_cpu", "sharding_name", "whole_tensors"]

def check_sharding(accelerator: Any = None) -> None:
    """One line for a sharding the generator trainers cannot run (FSDP 1, DeepSpeed), asked by the launcher's
    environment or by ``accelerator``."""
    kind = getattr(getattr(accelerator, "distributed_type", None), "value", None)
    if kind == "DEEPSPEED" or parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise ValueError("the accelerate config asks for DeepSpeed (distributed_type: DEEPSPEED), which the "
                         "generator trainers do not support; shard the frozen base with FSDP2 instead "
                         "(distributed_type: FSDP, fsdp_config: {fsdp_version: 2}; see docs/gpu.md)")
    version = (accelerator.state.fsdp_plugin.fsdp_version if kind == "FSDP"
               else os.environ.get("FSDP_VERSION", "1").strip() if parse_flag_from_env("ACCELERATE_USE_FSDP") else "2")
    if str(version) != "2":
        raise ValueError(f"the accelerate config asks for FSDP version {version} (fsdp_version, FSDP_VERSION); "
                         "the generator trainers need fsdp_version: 2 (per-parameter sharding, the LoRA trained "
                         "beside the frozen base) in its fsdp_config")


def shard_on_cpu(accelerator: Any) -> None:
    """Turn a multi-process CPU run of an FSDP config into accelerate's FSDP2 run, as it is on GPUs."""
    if not parse_flag_from_env("ACCELERATE_USE_FSDP") or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate's own FSDP runs set it


def reshard_after_every_forward(model: Any, accelerator: Any) -> None:
    """Make a sharded ``model`` gather its weights afresh in every forward pass: FSDP2 keeps the root's gathered
    weights for a backward, and after a pass without one (sampling) they would go stale."""
    if not is_sharded(accelerator):
        return
    if accelerator.state.fsdp_plugin.reshard_after_forward is not True:
        raise ValueError("the accelerate config sets fsdp_reshard_after_forward: false; the generator trainers "
                         "sample without a backward pass, after which unsharded weights would go stale: set it to true")
    model.set_reshard_after_forward(True)


def is_sharded(accelerator: Any) -> bool:
    """Whether ``accelerator`` shards the models it prepares (accelerate's FSDP2)."""
    return bool(getattr(accelerator, "is_fsdp2", False))


def sharding_name(accelerator: Any) -> str:
    """What the run log records: ``fsdp2`` (with its settings) or ``none``."""
    if not is_sharded(accelerator):
        return "none"
    plugin = accelerator.state.fsdp_plugin
    policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)  # a partial once prepared
    return (f"fsdp2 over {accelerator.num_processes} processes (reshard_after_forward={plugin.reshard_after_forward}, "
            f"auto_wrap_policy={getattr(policy, '__name__', None)}, classes={plugin.transformer_cls_names_to_wrap}, "
            f"cpu_offload={type(plugin.cpu_offload).__name__})")


def whole_tensors(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """``tensors`` with each sharded one whole (collective, in the mapping's order on every process)."""
    from torch.distributed.tensor import DTensor

    return {name: t.full_tensor() if isinstance(t, DTensor) else t for name, t in tensors.items()}


@torch.no_grad()
def copy_whole_(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Copy the whole tensor ``source`` into ``target``, sharded or not (each process keeps its shard)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    source = source.to(device=target.device, dtype=target.dtype)
    if isinstance(target, DTensor):
        source = distribute_tensor(source, target.device_mesh, target.placements, src_data_rank=None)
    return target.copy_(source)


def reshard_optimizer_state(optimizer: Any) -> None:
    """After ``optimizer.load_state_dict`` with whole tensors, shard each state tensor of a sharded parameter's
    shape as that parameter is (torch's optimizers cannot mix the two)."""
    from torch.distributed.tensor import DTensor

    for param, state in getattr(optimizer, "optimizer", optimizer).state.items():  # accelerate's wrapper
        for key, value in state.items():
            if isinstance(param, DTensor) and isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = copy_whole_(torch.empty_like(param), value)
