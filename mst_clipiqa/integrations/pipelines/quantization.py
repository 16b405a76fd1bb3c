"""A quantized frozen base: the denoiser's linear weights stored in int8 (torchao's weight-only int8, one scale per
output channel) with the LoRA trained on top in full precision, as diffusers documents for FLUX (peft wraps
torchao's int8 linears). Half the weight memory of bf16; the matmuls dequantize on the fly."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

__all__ = ["QUANTIZATIONS", "quantize_denoiser"]

QUANTIZATIONS = ("int8",)


def quantize_denoiser(denoiser: nn.Module, kind: str = "int8") -> nn.Module:
    """Quantize ``denoiser``'s ``nn.Linear`` weights in place (before its LoRA is added) and return it. Works
    on CPU, GPU and meta tensors. Raises ValueError naming what to install when torchao is missing."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantize={kind!r}: expected one of {', '.join(QUANTIZATIONS)}")
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise ValueError(f"quantize={kind!r} needs torchao, which is not installed: pip install torchao") from None
    quantize_(denoiser, Int8WeightOnlyConfig())
    for module in denoiser.modules():
        if isinstance(module, nn.Linear) and is_traceable_wrapper_subclass(module.weight):
            module.register_forward_pre_hook(_in_weight_dtype)
    return denoiser


def _in_weight_dtype(module: nn.Linear, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Autocast does not see a quantized weight's matmul (the tensor subclass runs it): take the input to the
    weight's dtype as autocast would, or an fp32 output would meet half-precision norms further on."""
    return (args[0].to(module.weight.dtype), *args[1:])

