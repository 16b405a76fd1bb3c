"""Frozen matmul weights cast once for autocast, instead of on every call.

Autocast casts a weight to bf16 / fp16 each time an op uses it, and caches the
cast only for tensors that require grad; a frozen encoder is therefore re-cast
on every forward (on a CPU at small batches that is a third of the time).
``cast_matmul_weights`` swaps in cached copies, for the block only, of exactly
the weights autocast would cast anyway: those of linear and convolution layers
and attention in-projections, which feed no other op. Results are the same bit
for bit.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)
ATTENTION_PARAMETERS = ("in_proj_weight", "in_proj_bias")
# (module, name) -> (the fp32 parameter, its version, its storage address, the cast copy)
CastCache = dict[tuple[int, str], tuple[torch.Tensor, int, int, torch.Tensor]]


def _matmul_parameters(root: nn.Module, skip: set[int]) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    for qualified, module in root.named_modules():
        names = ("weight", "bias") if isinstance(module, MATMUL_MODULES) else \
            ATTENTION_PARAMETERS if isinstance(module, nn.MultiheadAttention) else ()
        for name in names:
            p = module._parameters.get(name)
            if (p is not None and p.dtype == torch.float32 and not p.requires_grad and id(p) not in skip
                    and "lora_" not in qualified):
                yield module, name, p


@contextmanager
def cast_matmul_weights(root: nn.Module, dtype: torch.dtype | None, cache: CastCache,
                        skip: set[int] = frozenset()) -> Iterator[None]:
    """Inside the block, ``root``'s frozen fp32 matmul weights (except ids in ``skip``) are ``dtype`` copies,
    cast on first use and kept in ``cache`` until the weight changes; float32 or None: nothing changes."""
    swapped = []
    try:
        if dtype is not None and dtype != torch.float32:
            for module, name, p in _matmul_parameters(root, skip):
                key = (id(module), name)
                hit = cache.get(key)
                if hit is None or hit[0] is not p or hit[1] != p._version or hit[2] != p.data_ptr():
                    hit = cache[key] = (p, p._version, p.data_ptr(), p.detach().to(dtype))
                module._parameters[name] = hit[3]
                swapped.append((module, name, p))
        yield
    finally:
        for module, name, p in swapped:
            module._parameters[name] = p
