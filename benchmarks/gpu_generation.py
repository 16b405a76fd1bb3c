"""The generator rows of ``bench_gpu.py``: best-of-N scoring against generation, and DRaFT-1 / AlignProp steps
against the sum of their parts timed alone, with peak memory."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from benchmarks.gpu_plan import GpuPlan
from benchmarks.gpu_reward import with_autocast_recasts
from benchmarks.harness.memory import PeakMemory
from benchmarks.harness.timing import med, time_interleaved, timed
from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, best_of_n, decode_latents, score_images
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.inference.ranking import Ranking
from mst_clipiqa.integrations.pipelines.lora import lora_parameters
from mst_clipiqa.reward import MSTCLIPIQAReward

PROMPT = "a lighthouse on a cliff at dusk"
PROMPTS = [PROMPT, "a bowl of fruit on a wooden table"]


def build_pipeline(plan: GpuPlan) -> Any:
    """SD 1.5 architecture in bf16 (random weights), or the tiny SD pipeline for --smoke."""
    if plan.sd15:
        from benchmarks.sd15 import sd15_pipeline

        return sd15_pipeline(plan.device, torch.bfloat16)
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

    return tiny_sd_pipeline(device=plan.device)


def measure_best_of_n(plan: GpuPlan, reward: MSTCLIPIQAReward, pipe: Any) -> dict:
    """Row 6: one warm-up and one measured ``best_of_n``; then, on its images, scoring as it does now (images
    on the device, weight casts cached), as it did before (images back from the CPU, autocast re-casting
    every weight) and the bare reward, timed interleaved; and what showing the result costs."""
    kwargs = dict(num_inference_steps=plan.steps, guidance_scale=plan.guidance, height=plan.image_size,
                  width=plan.image_size)
    best_of_n(pipe, PROMPT, reward, n=plan.n, **kwargs)  # warm-up at the measured sizes
    ranking = best_of_n(pipe, PROMPT, reward, n=plan.n, **kwargs)
    on_cpu = torch.stack([c.image for c in ranking.candidates])
    on_device = on_cpu.to(plan.device)

    def bare() -> torch.Tensor:
        with torch.no_grad():
            return reward(on_device).cpu()

    fns = {"now": lambda: score_images(reward, on_device, PROMPT),
           "before": with_autocast_recasts(lambda: score_images(reward, on_cpu, PROMPT)), "reward alone": bare}
    rounds = time_interleaved(fns, plan.device, 1, plan.highres_repeats)
    times = {k: med(v) for k, v in rounds.items()}
    shown = timed(lambda: _show(ranking))
    generation = ranking.timings["generation_s"]
    return {"generation_s": generation, "best_of_n_scoring_s": ranking.timings["scoring_s"],
            "scoring_now_s": times["now"], "scoring_before_s": times["before"], "reward_alone_s": times["reward alone"],
            "fraction_now": times["now"] / generation, "fraction_before": times["before"] / generation,
            "now_over_before_paired": med([a / b for a, b in zip(rounds["now"], rounds["before"])]),
            "show_s": shown, "n": plan.n}


def _show(ranking: Ranking) -> tuple:
    fresh = Ranking(ranking.prompt, ranking.candidates, ranking.top_k, ranking.timings)  # no cached sheet
    return fresh.best, fresh.contact_sheet, fresh.records()


def _part_steps(plan: GpuPlan, trainer: RewardFinetuner, reward: MSTCLIPIQAReward,
                checkpointed: bool) -> dict[str, Callable[[], object]]:
    """A step's parts, each alone: no-grad sampling, one guided UNet fwd+bwd (to the LoRA), VAE decode
    fwd+bwd and reward fwd+bwd (to the pixels), at the step's batch and sizes."""
    pipe, unet, config, device = trainer.pipe, trainer.unwrapped, trainer.config, plan.device
    batch, side = plan.train_batch, plan.image_size // int(pipe.vae_scale_factor)
    g = torch.Generator().manual_seed(0)
    guided = 2 * batch if plan.guidance > 1 else batch
    latents = torch.randn(guided, unet.config.in_channels, side, side, generator=g).to(device, unet.dtype)
    context = torch.randn(guided, 77, unet.config.cross_attention_dim, generator=g).to(device, unet.dtype)
    vae_latents = torch.randn(batch, pipe.vae.config.latent_channels, side, side, generator=g).to(device)
    images = torch.rand(batch, 3, plan.image_size, plan.image_size, generator=g).to(device)
    timestep = torch.tensor(500, device=device)
    params = lora_parameters(unet)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return unet(x, timestep, encoder_hidden_states=context).sample

    def unet_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = checkpoint(predict, latents, use_reentrant=False) if checkpointed else predict(latents)
        out.float().square().mean().backward()
        for p in params:
            p.grad = None

    def decode_step() -> None:
        z = vae_latents.clone().requires_grad_(True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            decoded = decode_latents(pipe.vae, z, chunk_size=config.decode_chunk_size,
                                     gradient_checkpointing=config.decode_checkpointing)
        decoded.mean().backward()

    def reward_step() -> None:
        x = images.clone().requires_grad_(True)
        reward(x).sum().backward()

    seeds = list(range(batch))
    return {"no-grad sampling": lambda: trainer.sample(PROMPTS[:1] * batch, seeds), "UNet fwd+bwd": unet_step,
            "VAE decode fwd+bwd": decode_step, "reward fwd+bwd": reward_step}


def measure_finetune_case(plan: GpuPlan, reward: MSTCLIPIQAReward, pipe: Any, settings: dict,
                          unet_calls: int | None) -> dict:
    """Step time (median after one warm-up step) and peak memory above the trained state; with ``unet_calls``
    also the parts, and the step over ``sampling + unet_calls x UNet + decode + reward``."""
    config = from_flat_settings(RewardFinetuneConfig, {
        "num_inference_steps": plan.steps, "guidance_scale": plan.guidance, "batch_size": plan.train_batch,
        "lora_rank": plan.lora_rank, "mixed_precision": "bf16", "height": plan.image_size, "width": plan.image_size,
        "progress_bar": False, **settings})
    trainer = RewardFinetuner(pipe, reward, PROMPTS, config)
    trainer.train_step()  # warm-up: optimizer state, kernel choices
    with PeakMemory(plan.device) as memory:
        first = timed(trainer.train_step, plan.device)
    steps = [first] + [timed(trainer.train_step, plan.device) for _ in range(plan.train_repeats - 1)]
    result = {"step_s": statistics.median(steps), "peak_bytes": memory.peak_bytes, "memory_method": memory.method,
              "checkpointing": config.checkpoint_denoiser}
    if unet_calls is not None:
        parts = _part_steps(plan, trainer, reward, config.checkpoint_denoiser)
        times = {k: med(v) for k, v in time_interleaved(parts, plan.device, 1, plan.train_repeats).items()}
        total = sum(t * (unet_calls if name == "UNet fwd+bwd" else 1) for name, t in times.items())
        result.update(parts_s=times, unet_calls=unet_calls, parts_sum_s=total, ratio=result["step_s"] / total)
    return result


def measure_finetune(plan: GpuPlan, reward: MSTCLIPIQAReward, pipes: Callable[[], Any]) -> dict:
    """Rows 7 and 8: DRaFT-1 without and with denoiser checkpointing, AlignProp with K fixed (so that the
    parts add up to a known number of UNet calls); a fresh pipeline for each (LoRA is added in place)."""
    k = plan.alignprop_k
    return {"draft": measure_finetune_case(plan, reward, pipes(), {"method": "draft", "draft_k": 1}, 1),
            "draft_checkpointed": measure_finetune_case(plan, reward, pipes(), {
                "method": "draft", "draft_k": 1, "gradient_checkpointing": True}, None),
            "alignprop": measure_finetune_case(plan, reward, pipes(), {
                "method": "alignprop", "alignprop_k_range": (k, k)}, k)}
