"""Peak tensor memory and FLOPs of a traced step: a dispatch mode that sees every tensor an op creates (forward,
backward and optimizer, on real or meta tensors alike) and when its storage dies, like the CUDA caching
allocator's ``max_memory_allocated`` without its block rounding, and counts each op's FLOPs with torch's own
formulas (``torch.utils.flop_counter``; its ``FlopCounterMode`` hooks modules, which keeps tensors alive)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_backward_flop, sdpa_flop

__all__ = ["AllocationTracker", "fused_attention", "resident_bytes"]

_aten = torch.ops.aten
_FLASH = _aten._scaled_dot_product_flash_attention_for_cpu
for _op, _formula in ((_FLASH, sdpa_flop), (_aten._scaled_dot_product_flash_attention_for_cpu_backward,
                                             sdpa_backward_flop)):
    if _op not in flop_registry:  # torch counts the GPU kernels' FLOPs, not this one's
        register_flop_formula(_op, get_raw=True)(_formula)  # the formulas are already shape-wrapped


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_: Any):
    return _FLASH(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


@contextmanager
def fused_attention() -> Iterator[None]:
    """Attention as a fused kernel computes it (flash / memory-efficient on GPUs, flash on CPUs), never the
    (L, L) score matrix: on meta tensors torch would otherwise take its unfused math path. Patched on the
    module (not a mode) so that checkpointed recomputation in backward takes the same path."""
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _fused_attention
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def resident_bytes(*objects: Any) -> int:
    """Bytes of the distinct storages behind the tensors of ``objects`` (modules: parameters and buffers; a
    quantized weight, a tensor subclass, by the tensors it holds)."""
    seen: dict[int, int] = {}
    for obj in objects:
        tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else tree_leaves(obj)
        while tensors:
            t = tensors.pop()
            if is_traceable_wrapper_subclass(t):
                tensors.extend(getattr(t, name) for name in t.__tensor_flatten__()[0])
            elif isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())


def _storages(tree: Any) -> set[int]:
    return {t.untyped_storage()._cdata for t in tree_leaves(tree)
            if isinstance(t, torch.Tensor) and not is_traceable_wrapper_subclass(t)}


class AllocationTracker(TorchDispatchMode):
    """``with AllocationTracker() as tracker: ...``; then ``tracker.peak``: the most bytes of storages created
    inside the block that were alive at once (storages from before the block are not counted), and
    ``tracker.flops``."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.upper = self.peak = self.flops = 0  # upper: live plus dead-but-not-yet-swept

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        inputs = None
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage._cdata not in self.live:  # new, or a view of a tensor from before the block
                    inputs = _storages((args, kwargs)) if inputs is None else inputs
                    if storage._cdata in inputs:
                        continue  # e.g. linear's weight.t(): a view of a weight is no allocation
                self._created(storage)
        return out

    def _created(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        known = self.live.get(key)
        if known is not None and not known[0].expired():
            return  # a view or an in-place result
        if known is not None:
            self.upper -= known[1]
        self.live[key] = (StorageWeakRef(storage), storage.nbytes())
        self.upper += storage.nbytes()
        if self.upper > self.peak:  # only then can the live bytes be a new peak: count them exactly
            self._sweep()
            self.peak = max(self.peak, self.upper)

    def _sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.upper -= self.live.pop(key)[1]
