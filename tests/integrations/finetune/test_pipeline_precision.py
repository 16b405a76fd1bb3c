"""A half-precision pipeline handed to a trainer from Python trains its fp32 LoRA under the pipeline's autocast,
with no setting to add (the issue's 'mat1 and mat2 must have the same dtype'), or stops with one line."""
import pytest
import torch

from mst_clipiqa.integrations.finetune.finetuner import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.finetune.launch import pipeline_precision
from mst_clipiqa.integrations.finetune.policy_gradient import PolicyFinetuneConfig, PolicyTrainer
from mst_clipiqa.integrations.pipelines import tiny
from mst_clipiqa.integrations.pipelines.lora import lora_parameters
from mst_clipiqa.runtime.processes import new_accelerator


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


SETTINGS = dict(num_inference_steps=2, max_steps=1, batch_size=1, progress_bar=False, cpu=True)


@pytest.mark.parametrize("builder,trainer", [
    ("tiny_sd_pipeline", "draft"), ("tiny_sd3_pipeline", "draft"), ("tiny_flux_pipeline", "grpo")])
def test_a_bf16_pipeline_trains_without_further_settings(builder, trainer):
    pipe = getattr(tiny, builder)().to(dtype=torch.bfloat16)
    encode = {} if builder == "tiny_sd_pipeline" else {"max_sequence_length": 8}
    if trainer == "draft":
        run = RewardFinetuner(pipe, brightness, ["a cat"], RewardFinetuneConfig(**SETTINGS, encode_kwargs=encode))
    else:
        run = PolicyTrainer(pipe, brightness, ["a cat"], PolicyFinetuneConfig(
            **SETTINGS, encode_kwargs=encode, group_size=2, prompts_per_step=1))
    before = [p.detach().clone() for p in lora_parameters(run.unwrapped)]
    run.train()
    after = lora_parameters(run.unwrapped)
    assert run.accelerator.mixed_precision == "bf16" and run.config.mixed_precision == "bf16"
    assert {p.dtype for p in after} == {torch.float32} and run.family.denoiser.dtype == torch.bfloat16
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # it trained


def test_precision_named_elsewhere_wins_and_wrong_combinations_get_one_line(monkeypatch):
    pipe = tiny.tiny_sd_pipeline().to(dtype=torch.bfloat16)
    assert pipeline_precision(RewardFinetuneConfig(mixed_precision="no", cpu=True), pipe).mixed_precision == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert pipeline_precision(RewardFinetuneConfig(cpu=True), pipe).mixed_precision is None  # the launcher's
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    with pytest.raises(ValueError, match="weights are fp16 and this run is on the CPU"):
        pipeline_precision(RewardFinetuneConfig(cpu=True), tiny.tiny_sd_pipeline().to(dtype=torch.float16))
    with pytest.raises(ValueError, match="weights are bf16 but the Accelerator runs mixed_precision='no'"):
        RewardFinetuner(pipe, brightness, ["a cat"], RewardFinetuneConfig(**SETTINGS),
                        new_accelerator(cpu=True, mixed_precision="no"))
    fp32 = tiny.tiny_sd_pipeline()
    assert pipeline_precision(RewardFinetuneConfig(cpu=True), fp32).mixed_precision is None
