"""SD-Turbo's architecture with random weights, and what the inference-time reward methods cost on it:
noise-optimisation iterations per second and peak memory, a guided sample, best-of-N per image."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks.harness.machine import device_name
from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.report import fmt_bytes, markdown_table
from benchmarks.harness.timing import timed
from benchmarks.sampling_methods import best_of_candidates
from mst_clipiqa.integrations import NoiseOptimizationConfig, PromptSampler, guided_sample, optimize_noise
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, openai_clip_tokenizer

PROMPT = "a lighthouse at dusk"


def sd_turbo_sized_pipeline(device: torch.device, dtype: torch.dtype) -> Any:
    """``stabilityai/sd-turbo``'s configuration (SD 2.1 UNet, 865 M parameters; OpenCLIP ViT-H/14 text
    encoder; SD VAE; Euler ancestral with trailing timesteps) with random weights, built on ``device``."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, use_linear_projection=True)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=768)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
            projection_dim=512, hidden_act="gelu", max_position_embeddings=77, bos_token_id=49406,
            eos_token_id=49407, pad_token_id=49407))
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                steps_offset=1, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                   tokenizer=openai_clip_tokenizer(), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.to(dtype=dtype).eval()  # module by module: DiffusionPipeline.to warns about dtype casts
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _measured(fn: Any, device: torch.device) -> tuple[float, PeakMemory]:
    with PeakMemory(device) as memory:
        seconds = timed(fn, device)
    return seconds, memory


def report_sd_turbo_size(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = sd_turbo_sized_pipeline(device, dtype)
    torch.manual_seed(0)
    reward = MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.paper(pretrained=False))).to(device).eval()
    side = args.resolution
    settings = {"num_inference_steps": 1, "guidance_scale": 0.0, "height": side, "width": side}
    iterations = max(args.budget // 2, 2)
    print(f"{device_name(device)}; SD-Turbo architecture, random weights, {dtype}, {side} px, one step; "
          f"paper-size reward (ViT-B/32 + B/16, random weights), fp32")
    rows, figures = [], {}
    for checkpointing in (False, True):
        def run(steps: int, ckpt: bool = checkpointing) -> None:
            config = NoiseOptimizationConfig(steps=steps, gradient_checkpointing=ckpt, progress_bar=False, **settings)
            optimize_noise(pipe, PROMPT, reward, config)

        run(2)  # warm-up
        seconds, memory = _measured(lambda: run(iterations), device)
        key = "noise optimisation" + (", denoiser checkpointed" if checkpointing else "")
        figures[key] = {"iterations_per_s": iterations / seconds, "extra_peak_bytes": memory.peak_bytes,
                        "peak_bytes": memory.peak_bytes + memory.baseline_bytes}
        rows.append([key, f"{iterations / seconds:.2f} it/s", fmt_bytes(memory.peak_bytes),
                     fmt_bytes(memory.peak_bytes + memory.baseline_bytes)])
    for steps in (1, 4):
        guided = {**settings, "num_inference_steps": steps}
        guided_sample(pipe, PROMPT, reward, seeds=[0], reward_scale=0.05, progress=False, **guided)  # warm-up
        seconds, memory = _measured(lambda g=guided: guided_sample(pipe, PROMPT, reward, seeds=[1], reward_scale=0.05,
                                                                   progress=False, **g), device)
        key = f"guided sample, {steps} step(s), all guided"
        figures[key] = {"seconds": seconds, "extra_peak_bytes": memory.peak_bytes}
        rows.append([key, f"{seconds:.2f} s", fmt_bytes(memory.peak_bytes),
                     fmt_bytes(memory.peak_bytes + memory.baseline_bytes)])
    sampler = PromptSampler(pipe, PROMPT, **settings)
    best_of_candidates(sampler, reward, 0, 2)  # warm-up
    seconds, memory = _measured(lambda: best_of_candidates(sampler, reward, 1, 8), device)
    figures["best-of-8"] = {"seconds_per_image": seconds / 8, "extra_peak_bytes": memory.peak_bytes}
    rows.append(["best-of-8 (batches of 8, no gradients)", f"{seconds / 8:.2f} s per image",
                 fmt_bytes(memory.peak_bytes), fmt_bytes(memory.peak_bytes + memory.baseline_bytes)])
    print(markdown_table(["measure", "speed", "extra peak memory", "peak memory with weights"], rows))
    return figures
