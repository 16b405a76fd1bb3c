"""A quantized frozen base: the denoiser's linear weights stored in int8 (torchao's weight-only int8, one scale per
output channel) or in 4-bit NF4 (bitsandbytes, one fp32 scale per block of 64, as diffusers' ``BitsAndBytesConfig``
loads FLUX on 24 GB), with the LoRA trained on top in full precision (peft wraps both kinds of linears). int8 halves
the weight memory of bf16, NF4 takes it to about 0.56 byte per weight; the matmuls dequantize on the fly."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

__all__ = ["NF4_BLOCKSIZE", "QUANTIZATIONS", "nf4_loading", "quantize_denoiser"]

QUANTIZATIONS = ("int8", "nf4")
NF4_BLOCKSIZE = 64  # bitsandbytes' and diffusers' default: one fp32 absmax per 64 weights
_PACKAGES = {"int8": "torchao", "nf4": "bitsandbytes"}


def quantize_denoiser(denoiser: nn.Module, kind: str = "int8") -> nn.Module:
    """Quantize ``denoiser``'s ``nn.Linear`` weights in place (before its LoRA is added) and return it. Works on
    CPU, GPU (bitsandbytes' CPU backend included for nf4) and meta tensors, where nf4 needs no bitsandbytes: the
    planner's stand-in holds what bnb's layer holds. A denoiser diffusers loaded in NF4 (:func:`nf4_loading`) is
    only readied for training. Raises ValueError naming what to install when the package is missing."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantize={kind!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if kind == "nf4" and all(p.is_meta for p in denoiser.parameters()):
        return _replace_linears(denoiser, _MetaNF4Linear)
    _require(kind)
    if kind == "nf4":
        return _nf4(denoiser)
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(denoiser, Int8WeightOnlyConfig())
    for module in denoiser.modules():
        if isinstance(module, nn.Linear) and is_traceable_wrapper_subclass(module.weight):
            module.register_forward_pre_hook(_in_weight_dtype)
    return denoiser


def nf4_loading(denoiser: str, compute_dtype: torch.dtype) -> Any:
    """diffusers' ``PipelineQuantizationConfig`` for ``DiffusionPipeline.from_pretrained`` that loads the
    component ``denoiser`` (``"unet"`` or ``"transformer"``) in NF4 as its weights load, never whole on the GPU:
    the layout :func:`quantize_denoiser` gives a loaded one. diffusers' bitsandbytes loader needs a GPU."""
    _require("nf4")
    from diffusers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit", components_to_quantize=[denoiser],
                                      quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                                    "bnb_4bit_compute_dtype": compute_dtype,
                                                    "bnb_4bit_use_double_quant": False})


def _require(kind: str) -> None:
    package = _PACKAGES[kind]
    try:
        __import__("torchao.quantization" if kind == "int8" else package)
    except ImportError:
        raise ValueError(f"quantize={kind!r} needs {package}, which is not installed: pip install {package}") from None


def _in_weight_dtype(module: nn.Linear, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Autocast does not see a quantized weight's matmul (the tensor subclass runs it): take the input to the
    weight's dtype as autocast would, or an fp32 output would meet half-precision norms further on."""
    return (args[0].to(module.weight.dtype), *args[1:])


def _replace_linears(denoiser: nn.Module, make: Any) -> nn.Module:
    for parent in list(denoiser.modules()):
        for name, linear in list(parent.named_children()):
            if type(linear) is nn.Linear:
                setattr(parent, name, make(linear).requires_grad_(False))
    return denoiser


def _nf4(denoiser: nn.Module) -> nn.Module:
    """Each ``nn.Linear`` replaced by a ``bnb.nn.Linear4bit`` holding its weight in NF4 (what diffusers'
    ``replace_with_bnb_linear`` builds for ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")``),
    for a denoiser that is already loaded."""
    import bitsandbytes as bnb

    def nf4_linear(linear: nn.Linear) -> nn.Module:
        weight = linear.weight
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, linear.bias is not None,
                                  compute_dtype=weight.dtype, compress_statistics=False, quant_type="nf4",
                                  device="meta")
        layer.weight = bnb.nn.Params4bit(weight.data, requires_grad=False, quant_type="nf4", blocksize=NF4_BLOCKSIZE,
                                         compress_statistics=False, module=layer).to(weight.device)  # quantizes
        layer.bias = linear.bias
        return layer

    _replace_linears(denoiser, nf4_linear)
    for layer in denoiser.modules():
        if isinstance(layer, bnb.nn.Linear4bit) and _as_autocast not in layer._forward_pre_hooks.values():
            # On a CPU with AVX512-BF16 bnb repacks the weight for inference at the first no-grad call in eval
            # mode, and that layout's kernel has no backward: a rollout would silently cut the next step's gradient.
            layer.support_avx512bf16_for_cpu = False
            layer.register_forward_pre_hook(_as_autocast)
    return denoiser


def _as_autocast(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """bnb's layer returns its input's dtype and autocast does not see it: under autocast, take the input to the
    autocast dtype as it would for a linear, or an fp32 output would meet half-precision norms further on."""
    x = args[0]
    if not torch.is_autocast_enabled(x.device.type):
        return args
    return (x.to(torch.get_autocast_dtype(x.device.type)), *args[1:])


class _MetaNF4Linear(nn.Linear):
    """bnb's ``Linear4bit`` as the planner traces it on meta tensors: the weight packed two 4-bit codes a byte, one
    fp32 absmax per block and the 16-value code book; forward dequantizes into a temporary weight in the compute
    dtype, as bnb's kernel does, and backward keeps only the packed weight and dequantizes again."""

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype
        n = linear.in_features * linear.out_features
        self.weight = nn.Parameter(torch.empty((n + 1) // 2, 1, dtype=torch.uint8, device="meta"), requires_grad=False)
        self.register_buffer("absmax", torch.empty(-(-n // NF4_BLOCKSIZE), device="meta"))
        self.register_buffer("code", torch.empty(16, device="meta"))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (self.out_features, self.in_features)
        return _Dequantized.apply(x.to(self.compute_dtype), self.weight, shape, self.bias).to(x.dtype)


class _Dequantized(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, packed: torch.Tensor, shape: tuple[int, int],
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(packed)
        ctx.shape = shape
        return nn.functional.linear(x, packed.new_empty(shape, dtype=x.dtype), bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (packed,) = ctx.saved_tensors
        return grad @ packed.new_empty(ctx.shape, dtype=grad.dtype), None, None, None
