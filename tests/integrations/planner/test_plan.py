"""The planner: shipped architectures at their published sizes, every method traced, and its peak against the
peak a real trainer step allocates (tiny pipelines, CPU, same tracker on real tensors)."""
import importlib

import pytest
import torch

from benchmarks.bench_planner import CASES, _reward, compare
from mst_clipiqa.integrations.finetune.finetuner import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.integrations.planner import ARCHITECTURES, STEPS, StepSettings, meta_pipeline, parse_bytes, plan

plan_module = importlib.import_module("mst_clipiqa.integrations.planner.plan")

# denoiser parameters as published (diffusers model cards / papers), in millions
PUBLISHED = {"sd1.5": 859.5, "sdxl": 2567.5, "sd3.5-medium": 2243.0, "sd3.5-large": 8056.6, "flux.1-dev": 11901.4,
             "flux.1-schnell": 11901.4}


@pytest.mark.parametrize("name", ["sd1.5", "sd3.5-medium"])  # all of them: benchmarks/bench_planner.py --table
def test_shipped_architectures_are_the_published_ones(name):
    pipe, spec = meta_pipeline(name)
    denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
    millions = sum(p.numel() for p in denoiser.parameters()) / 1e6
    assert millions == pytest.approx(PUBLISHED[name], rel=0.01)
    assert denoiser.dtype == torch.bfloat16 and next(denoiser.parameters()).is_meta
    assert spec["hub_id"].count("/") == 1


def test_short_names_are_the_pipelines_hub_names():
    from mst_clipiqa.cli.pipeline_loading import HUB_IDS
    from mst_clipiqa.integrations.planner import architecture

    assert set(ARCHITECTURES) == set(HUB_IDS)
    assert all(architecture(name)["hub_id"] == HUB_IDS[name] for name in ARCHITECTURES)


def test_planned_peak_within_15_percent_of_the_measured_one():
    """DRaFT and GRPO on the tiny SD pipeline (SD3 too: benchmarks/bench_planner.py)."""
    for row in compare(CASES[:2]):
        assert 0.85 <= row["ratio"] <= 1.15, row


# one of each step program: refl is draft's, ddpo and nft are grpo's (all of them: bench_planner.py --table)
@pytest.mark.parametrize("method", ["draft", "alignprop", "grpo", "dpo", "best-of-n"])
def test_every_method_is_traced(method):
    s = StepSettings(batch_size=2, height=64, width=64, num_inference_steps=2, gradient_checkpointing=True)
    result = plan("tiny", method, s, reward=_reward("meta"), gpu_memory=parse_bytes("24GB"))
    assert result.flops > 0 and result.step > 0 and result.fits
    assert (result.lora > 0) == (method != "best-of-n")


def test_checkpointing_and_advice_change_the_plan():
    s = StepSettings(batch_size=1, height=64, width=64, num_inference_steps=2, draft_k=2)
    full = plan("tiny", "draft", s, reward=_reward("meta"))
    checkpointed = plan("tiny", "draft", StepSettings(**{**s.__dict__, "gradient_checkpointing": True}),
                        reward=_reward("meta"))
    assert checkpointed.step < full.step and checkpointed.flops > full.flops  # recomputation
    between = full.weights + full.lora + (checkpointed.step + full.step) // 2
    tight = plan("tiny", "draft", s, reward=_reward("meta"), gpu_memory=between)
    assert tight.fits is False and tight.advice.startswith("change: --gradient-checkpointing")


def test_bad_sizes_and_names_get_one_line():
    with pytest.raises(ValueError, match="expected a size in GB"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="expected one of"):
        plan("tiny", "sft")
    assert {"draft", "refl", "alignprop", "ddpo", "grpo", "nft", "dpo", "best-of-n"} == set(STEPS)


def test_released_text_encoders_leave_the_weights_and_the_step():
    from mst_clipiqa.integrations.pipelines.prompt_cache import text_encoders
    from mst_clipiqa.integrations.planner import resident_bytes

    s = StepSettings(batch_size=1, height=64, width=64, num_inference_steps=2)
    kept = plan("tiny", "draft", s, reward=_reward("meta"), text_encoders="keep")
    released = plan("tiny", "draft", s, reward=_reward("meta"))  # offload: the trainers' default
    pipe, _ = meta_pipeline("tiny")
    assert kept.weights - released.weights == resident_bytes(*text_encoders(pipe).values()) > 0
    assert released.flops < kept.flops and released.text_encoders == "offload"
    dpo = {mode: plan("tiny", "dpo", s, reward=_reward("meta"), text_encoders=mode) for mode in ("keep", "offload")}
    assert dpo["keep"].weights - dpo["offload"].weights == kept.weights - released.weights  # DPO releases them too


@pytest.mark.parametrize("force_upcast", [True, False])
def test_planner_and_trainer_decode_in_the_same_dtype(monkeypatch, conv_dtypes, force_upcast):
    """bf16: the planner traces without autocast, the trainer runs under it; the VAE decodes alike (fp32 when its
    config asks for the upcast, else bf16)."""
    planned = []

    def watched(*args, **kwargs):
        pipe, tokenizers = meta_pipeline(*args, **kwargs)
        pipe.vae.register_to_config(force_upcast=force_upcast)
        planned.append(conv_dtypes(pipe.vae))
        return pipe, tokenizers

    monkeypatch.setattr(plan_module, "meta_pipeline", watched)
    s = StepSettings(batch_size=1, height=32, width=32, num_inference_steps=1)
    plan("tiny", "draft", s, reward=_reward("meta"))
    pipe = tiny_sd_pipeline().to(dtype=torch.bfloat16)
    pipe.vae.register_to_config(force_upcast=force_upcast)
    trained = conv_dtypes(pipe.vae)
    run = RewardFinetuner(pipe, lambda images, prompts: images.mean(dim=(1, 2, 3)), ["a cat"],
                          RewardFinetuneConfig(num_inference_steps=1, height=32, width=32, cpu=True,
                                               progress_bar=False))
    run.compute_loss(["a cat"], [0])
    assert planned[0] == trained == {torch.float32 if force_upcast else torch.bfloat16}


def test_sharding_divides_the_denoiser_not_the_rest():
    s = StepSettings(batch_size=1, height=64, width=64, num_inference_steps=2)
    whole = plan("tiny", "draft", s, reward=_reward("meta"), dtype="fp32")
    sharded = plan("tiny", "draft", s, reward=_reward("meta"), dtype="fp32", shard_processes=2)
    pipe, _ = meta_pipeline("tiny", torch.float32)
    denoiser = plan_module.resident_bytes(pipe.unet)
    resident, gathered = plan_module.sharded_bytes(pipe.unet, 2)
    assert resident == denoiser // 2 and 0 < gathered < denoiser
    # the VAE, the reward and the step's activations stay whole; the denoiser's weights and the LoRA divide
    assert sharded.weights == whole.weights - denoiser + resident + gathered == whole.weights - resident + gathered
    assert sharded.step == whole.step and sharded.lora == -(-whole.lora // 2)
    assert "sharded over 2 processes" in sharded.summary()
    with pytest.raises(ValueError, match="shard_processes must be >= 1"):
        plan("tiny", "draft", s, shard_processes=0)


def test_advice_names_an_nf4_base_when_only_that_fits():
    s = StepSettings(batch_size=1, height=32, width=32, num_inference_steps=1, gradient_checkpointing=True)
    full, nf4 = (plan("tiny", "grpo", s, reward=_reward("meta"), quantize=q) for q in (None, "nf4"))
    assert nf4.peak < full.peak
    tight = plan("tiny", "grpo", s, reward=_reward("meta"), gpu_memory=nf4.peak)
    assert not tight.fits and tight.advice == "change: --quantize nf4 (pip install bitsandbytes)"
