"""A quantized frozen base: the denoiser's linear weights in int8 (torchao) with the LoRA trained on top, or one line
naming what to install; the planner counts the int8 weights."""

import sys

import pytest
import torch

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.quantization import quantize_denoiser
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline


def test_without_torchao_it_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # what an absent package raises on import
    with pytest.raises(ValueError, match=r"^quantize='int8' needs torchao, which is not installed: pip install "
                                         r"torchao$"):
        quantize_denoiser(tiny_sd_pipeline().unet)
    with pytest.raises(ValueError, match="expected one of int8"):
        quantize_denoiser(tiny_sd_pipeline().unet, "nf4")


def test_the_lora_trains_on_an_int8_base_in_bf16():
    pytest.importorskip("torchao.quantization")
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    pipe = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    quantize_denoiser(pipe.unet)
    base = pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_q
    frozen = base.weight.dequantize().clone()
    config = from_flat_settings(RewardFinetuneConfig, dict(
        max_steps=1, batch_size=1, height=32, width=32, num_inference_steps=2, lora_rank=2, learning_rate=1e-2,
        progress_bar=False, mixed_precision="bf16"))
    trainer = RewardFinetuner(pipe, lambda images: images.mean(dim=(1, 2, 3)), ["a cat"], config)
    before = {k: v.detach().clone() for k, v in trainer.trained_parameters().items()}
    trainer.train()
    after = trainer.trained_parameters()
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
