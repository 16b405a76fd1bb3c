"""FLOP counting with ``FlopCounterMode``, including the CPU flash-attention kernels it has no formula for."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils import flop_counter as fc


def cpu_sdpa_mapping() -> dict:
    """FlopCounterMode has no formula for the CPU flash-attention kernels: give them the SDPA ones."""
    aten = torch.ops.aten
    mapping = {}
    if not (hasattr(fc, "sdpa_flop_count") and hasattr(fc, "sdpa_backward_flop_count")):
        return mapping
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        def fwd(q, k, v, *args, out_shape=None, **kwargs):
            return fc.sdpa_flop_count(q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
            return fc.sdpa_backward_flop_count(grad_out, q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return {k: v for k, v in mapping.items() if k not in fc.flop_registry}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn``."""
    counter = fc.FlopCounterMode(display=False, custom_mapping=cpu_sdpa_mapping())
    with counter:
        fn()
    return int(counter.get_total_flops())
