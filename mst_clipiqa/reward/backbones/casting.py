"""Frozen matmul weights cast once for autocast, instead of on every call.

Autocast casts a weight to bf16 / fp16 each time an op uses it, and caches the
cast only for tensors that require grad; a frozen encoder is therefore re-cast
on every forward (on a CPU at small batches that is a third of the time).
``cast_matmul_weights`` swaps in cached copies, for the block only, of exactly
the weights autocast would cast anyway: those of linear and convolution layers
and attention in-projections, which feed no other op. Results are the same bit
for bit.

CPU only: on a GPU the casts are cheap device work (0.7 ms of 102 ms for the
paper encoders' fwd+bwd at batch 256 on an H100) that runs while the host
queues kernels, and swapping the weights costs the host more (measured there:
the reward 1.6 % slower at batch 256 and 3.6 % at batch 64 with the swap).
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

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


def _on_cpu(root: nn.Module) -> bool:
    first = next(root.parameters(), None)
    return first is not None and first.device.type == "cpu"


def cast_matmul_weights(root: nn.Module, dtype: torch.dtype | None, cache: CastCache,
                        skip: Callable[[], Iterable[torch.Tensor]] = tuple) -> AbstractContextManager:
    """Inside the block, ``root``'s frozen fp32 matmul weights (except the tensors ``skip()`` gives) are
    ``dtype`` copies, cast on first use and kept in ``cache`` until the weight changes; float32 or None:
    the weights stay. Weights off the CPU: nothing changes, at no cost (the GPU's host must stay free to
    queue kernels).

    Thread-safe: the swap changes ``root`` for every thread, so blocks that need other weights than the
    ones ``root`` holds now (a float32 block while bfloat16 copies are in, or the reverse) wait until the
    blocks holding them end; blocks that need the same weights run together.
    """
    if not _on_cpu(root):
        return nullcontext()
    wanted = None if dtype in (None, torch.float32) else dtype
    return _holding(_state_of(root), root, wanted, cache, lambda: {id(t) for t in skip()})


class _WeightState:
    """Which weights a root's modules hold now (``dtype`` None: its own) and how many blocks use them."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.dtype: torch.dtype | None = None
        self.users = 0
        self.swapped: list[tuple[nn.Module, str, torch.Tensor]] = []


_STATES: weakref.WeakKeyDictionary[nn.Module, _WeightState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _state_of(root: nn.Module) -> _WeightState:
    with _STATES_LOCK:  # kept outside the module: a lock in it would stop copy.deepcopy
        return _STATES.setdefault(root, _WeightState())


@contextmanager
def _holding(state: _WeightState, root: nn.Module, dtype: torch.dtype | None, cache: CastCache,
             skip: Callable[[], set[int]]) -> Iterator[None]:
    with state.changed:
        state.changed.wait_for(lambda: state.users == 0 or state.dtype == dtype)
        if state.users == 0 and dtype is not None:
            state.swapped = _swap(root, dtype, cache, skip())
        state.dtype, state.users = dtype, state.users + 1
    try:
        yield
    finally:
        with state.changed:
            state.users -= 1
            if state.users == 0:
                _restore(state.swapped)
                state.swapped, state.dtype = [], None
                state.changed.notify_all()


def _swap(root: nn.Module, dtype: torch.dtype, cache: CastCache, skip: set[int]
          ) -> list[tuple[nn.Module, str, torch.Tensor]]:
    swapped = []
    try:
        for module, name, p in _matmul_parameters(root, skip):
            key = (id(module), name)
            hit = cache.get(key)
            if hit is None or hit[0] is not p or hit[1] != p._version or hit[2] != p.data_ptr():
                hit = cache[key] = (p, p._version, p.data_ptr(), p.detach().to(dtype))
            module._parameters[name] = hit[3]
            swapped.append((module, name, p))
    except BaseException:
        _restore(swapped)
        raise
    return swapped


def _restore(swapped: list[tuple[nn.Module, str, torch.Tensor]]) -> None:
    for module, name, p in swapped:
        module._parameters[name] = p
