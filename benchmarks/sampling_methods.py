"""The three inference-time ways to use a reward, each at a budget of reward evaluations, for one prompt and
one held-out seed: best-of-N, noise optimisation (ReNO, with and without early stopping) and reward guidance;
and the scorers that judge them (the optimised reward and two independent ones)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from mst_clipiqa.integrations import NoiseOptimizationConfig, PromptSampler, guided_sample, optimize_noise
from mst_clipiqa.integrations.pipelines.tiny import tiny_lcm_pipeline, tiny_sd_turbo_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, ImageSpec, MSTCLIPIQAConfig, MSTCLIPIQAReward, preprocess

# name -> (tiny pipeline, sampler steps, CFG scale, gradient_steps K of noise optimisation)
SAMPLERS = {"one-step (SD-Turbo sampler)": (tiny_sd_turbo_pipeline, 1, 0.0, None),
            "4-step LCM (noise opt. K=1)": (tiny_lcm_pipeline, 4, 1.0, 1)}
# Tiny MST models are random: some seeds give near-constant scores (std < 0.03 over 64 plain samples for seeds
# 1, 2, 6, 7). The held-out scorer and the monitor are the first two seeds after 0 whose scores spread (3, 4).
REWARD_SEED, HELD_OUT_SEED, MONITOR_SEED, CLIP_SEED = 0, 3, 4, 2
CANDIDATE_STRIDE = 10_000  # candidate j of seed s: s + j * stride (candidate 0 is the seed itself)
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                             "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


class CLIPScore(nn.Module):
    """100 x cosine similarity of image and prompt embeddings (open_clip), as in examples/combined_reward.py."""

    def __init__(self, model: open_clip.CLIP):
        super().__init__()
        self.model, self.tokenizer = model, open_clip.get_tokenizer("ViT-B-32")
        size = model.visual.image_size
        self.spec = ImageSpec(size if isinstance(size, int) else size[0], open_clip.OPENAI_DATASET_MEAN,
                              open_clip.OPENAI_DATASET_STD)

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        image = F.normalize(self.model.encode_image(preprocess(images, self.spec)), dim=-1)
        text = F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(images.device)), dim=-1)
        return 100 * (image * text).sum(-1)


def tiny_mst(seed: int, device: str) -> MSTCLIPIQAReward:
    torch.manual_seed(seed)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A"))).to(device).eval()


def scorers(device: str) -> dict[str, nn.Module]:
    """The reward every method optimises, the monitor for early stopping, and the two independent judges."""
    torch.manual_seed(CLIP_SEED)
    clip = CLIPScore(open_clip.CLIP(**TINY_CLIP)).to(device).eval()
    return {"reward": tiny_mst(REWARD_SEED, device), "monitor": tiny_mst(MONITOR_SEED, device),
            "held-out MST": tiny_mst(HELD_OUT_SEED, device), "CLIP score": clip}


@dataclass
class Selection:
    """What one method kept for one (prompt, seed): the image, its reward, what it cost, its reward curve
    (best reward so far after each evaluation; NaN while no image is finished)."""

    image: torch.Tensor
    reward: float
    evaluations: int
    seconds: float
    curve: list[float]


def _running_max(values: list[float]) -> list[float]:
    return [max(values[: i + 1]) for i in range(len(values))]


def candidates(seed: int, n: int) -> list[int]:
    return [seed + j * CANDIDATE_STRIDE for j in range(n)]


def best_of_candidates(sampler: PromptSampler, reward: nn.Module, seed: int, budget: int, chunk: int = 8) -> Selection:
    start, seeds = time.perf_counter(), candidates(seed, budget)
    images, rewards = [], []
    with torch.no_grad():
        for i in range(0, budget, chunk):
            part = seeds[i: i + chunk]
            batch = sampler.images(sampler.noise(part), part)
            images.append(batch)
            rewards += reward(batch, [sampler.prompt] * len(part)).tolist()
    best = max(range(budget), key=rewards.__getitem__)
    return Selection(torch.cat(images)[best].cpu(), rewards[best], budget, time.perf_counter() - start,
                     _running_max(rewards))


def noise_optimisation(sampler: PromptSampler, reward: nn.Module, seed: int, budget: int, k: int | None,
                       monitor: nn.Module | None = None) -> Selection:
    start = time.perf_counter()
    config = NoiseOptimizationConfig(steps=budget, seed=seed, gradient_steps=k, patience=3, progress_bar=False,
                                     **sampler.settings)
    result = optimize_noise(sampler.pipe, sampler.prompt, reward, config, monitor=monitor)
    return Selection(result.image, result.reward, len(result.history), time.perf_counter() - start,
                     _running_max(result.rewards))


def guidance(sampler: PromptSampler, reward: nn.Module, seed: int, budget: int, scale: float) -> Selection:
    """Every step guided (the last ``budget - 1`` if fewer); as many guided samples (candidate seeds) as the
    budget pays for, the best kept."""
    start = time.perf_counter()
    guided = min(sampler.num_inference_steps, budget - 1)
    per_sample = guided + 1  # a reward call per guided step, one for the final image
    n = budget // per_sample
    result = guided_sample(sampler.pipe, sampler.prompt, reward, seeds=candidates(seed, n), reward_scale=scale,
                           guided_steps=guided, progress=False, **sampler.settings)
    best = int(result.rewards.argmax())
    done = _running_max([float(r) for r in result.rewards])  # known once a sample's last evaluation is spent
    curve = [done[i // per_sample] if i % per_sample == per_sample - 1 else math.nan for i in range(n * per_sample)]
    return Selection(result.images[best], float(result.rewards[best]), n * per_sample,
                     time.perf_counter() - start, curve)


def methods(budget: int, k: int | None, scale: float, monitor: nn.Module
            ) -> dict[str, Callable[[PromptSampler, nn.Module, int], Selection]]:
    """Method name -> run(sampler, reward, seed), each spending at most ``budget`` reward evaluations."""
    return {
        "plain sample": lambda s, r, seed: best_of_candidates(s, r, seed, 1),
        f"best-of-{budget}": lambda s, r, seed: best_of_candidates(s, r, seed, budget),
        "noise optimisation (ReNO)": lambda s, r, seed: noise_optimisation(s, r, seed, budget, k),
        "noise opt. + early stop (monitor)": lambda s, r, seed: noise_optimisation(s, r, seed, budget, k, monitor),
        f"guidance, best of the guided (scale {scale})": lambda s, r, seed: guidance(s, r, seed, budget, scale),
    }
