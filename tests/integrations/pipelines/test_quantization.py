"""A quantized frozen base: the denoiser's linear weights in int8 (torchao) or NF4 (bitsandbytes) with the LoRA trained
on top, or one line naming what to install; the planner counts the quantized weights (NF4 without bitsandbytes)."""

import sys

import pytest
import torch

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.quantization import NF4_BLOCKSIZE, quantize_denoiser
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline


def test_without_torchao_it_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # what an absent package raises on import
    with pytest.raises(ValueError, match=r"^quantize='int8' needs torchao, which is not installed: pip install "
                                         r"torchao$"):
        quantize_denoiser(tiny_sd_pipeline().unet)
    with pytest.raises(ValueError, match="^quantize='fp8': expected one of int8, nf4$"):
        quantize_denoiser(tiny_sd_pipeline().unet, "fp8")


def test_without_bitsandbytes_nf4_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ValueError, match=r"^quantize='nf4' needs bitsandbytes, which is not installed: pip install "
                                         r"bitsandbytes$"):
        quantize_denoiser(tiny_sd_pipeline().unet, "nf4")


def _one_bf16_lora_step(pipe):
    """The LoRA's weights before and after one bf16 DRaFT step on ``pipe``."""
    config = from_flat_settings(RewardFinetuneConfig, dict(
        max_steps=1, batch_size=1, height=32, width=32, num_inference_steps=2, lora_rank=2, learning_rate=1e-2,
        progress_bar=False, mixed_precision="bf16"))
    trainer = RewardFinetuner(pipe, lambda images: images.mean(dim=(1, 2, 3)), ["a cat"], config)
    before = {k: v.detach().clone() for k, v in trainer.trained_parameters().items()}
    trainer.train()
    return before, trainer.trained_parameters()


def test_the_lora_trains_on_an_int8_base_in_bf16():
    pytest.importorskip("torchao.quantization")
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    pipe = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    quantize_denoiser(pipe.unet)
    base = pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q
    frozen = base.weight.dequantize().clone()
    before, after = _one_bf16_lora_step(pipe)
    assert is_traceable_wrapper_subclass(base.base_layer.weight if hasattr(base, "base_layer") else base.weight)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the gradient reached the LoRA
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in after.values())
    assert torch.equal(pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q.base_layer.weight
                       .dequantize(), frozen)


def test_the_planner_counts_int8_weights():
    pytest.importorskip("torchao.quantization")
    from mst_clipiqa.integrations.planner import StepSettings, plan, resident_bytes

    s = StepSettings(height=32, width=32, num_inference_steps=1)
    full, int8 = (plan("tiny", "draft", s, dtype="bf16", quantize=q) for q in (None, "int8"))
    real = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    saved = resident_bytes(real.unet) - resident_bytes(quantize_denoiser(real.unet))
    assert full.weights - int8.weights == saved > 0 and int8.quantize == "int8"


def _linear_sizes(denoiser):
    return [m.in_features * m.out_features for m in denoiser.modules() if type(m) is torch.nn.Linear]


def test_the_planner_counts_nf4_weights_without_bitsandbytes(monkeypatch):
    from benchmarks.bench_planner import _reward
    from mst_clipiqa.integrations.planner import StepSettings, meta_pipeline, plan

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    s = StepSettings(height=32, width=32, num_inference_steps=1)
    full, nf4 = (plan("tiny", "draft", s, dtype="bf16", reward=_reward("meta"), quantize=q) for q in (None, "nf4"))
    # bf16: 2 bytes a weight; NF4: half a byte, an fp32 absmax per 64 weights, a 16-value fp32 code book per layer
    sizes = _linear_sizes(meta_pipeline("tiny", torch.bfloat16)[0].unet)
    nf4_bytes = sum((n + 1) // 2 + 4 * -(-n // NF4_BLOCKSIZE) + 64 for n in sizes)
    assert full.weights - nf4.weights == 2 * sum(sizes) - nf4_bytes > 0 and nf4.quantize == "nf4"
    assert nf4.lora == full.lora and nf4.flops == full.flops  # the same LoRA, the same matmuls


def _nf4_layers(denoiser):
    import bitsandbytes as bnb

    return [m for m in denoiser.modules() if isinstance(m, bnb.nn.Linear4bit)]


def test_the_planners_nf4_layer_holds_what_bitsandbytes_holds():
    pytest.importorskip("bitsandbytes")
    from mst_clipiqa.integrations.planner import meta_pipeline, resident_bytes

    real = quantize_denoiser(tiny_sd_pipeline().to(dtype=torch.bfloat16).unet, "nf4")
    states = [layer.weight.quant_state for layer in _nf4_layers(real)]
    held = resident_bytes(real) + sum(q.absmax.nbytes + q.code.nbytes for q in states)  # the state is no buffer
    planned = quantize_denoiser(meta_pipeline("tiny", torch.bfloat16)[0].unet, "nf4")
    assert resident_bytes(planned) == held
    assert {(q.blocksize, q.quant_type, q.absmax.dtype, q.nested) for q in states} == {
        (NF4_BLOCKSIZE, "nf4", torch.float32, False)}


def test_nf4_layers_pass_the_gradient_after_a_no_grad_call_in_eval_mode():
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    linear = torch.nn.Linear(128, 64, bias=False, dtype=torch.bfloat16)
    layer = quantize_denoiser(torch.nn.Sequential(linear), "nf4").eval()[0]
    x = torch.randn(4, 128, dtype=torch.bfloat16)
    with torch.no_grad():
        layer(x)  # a rollout: bnb would repack the weight for inference on an AVX512-BF16 CPU
    x.requires_grad_(True)
    layer(x).float().square().sum().backward()
    w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    x2 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, w).float().square().sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, x2.grad)


def test_the_lora_trains_on_an_nf4_base_in_bf16():
    pytest.importorskip("bitsandbytes")
    pipe = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    quantize_denoiser(pipe.unet, "nf4")
    layers = _nf4_layers(pipe.unet)
    frozen = [layer.weight.data.clone() for layer in layers]
    before, after = _one_bf16_lora_step(pipe)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if "lora_B" in k}  # every layer's gradient, at a first step with B = 0
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in after.values())
    assert layers == _nf4_layers(pipe.unet)  # peft wrapped bnb's layers, and they stayed frozen
    assert all(torch.equal(layer.weight.data, f) for layer, f in zip(layers, frozen))
