"""One step of each fine-tuning method, as the trainers run it, written so that it also runs on meta tensors:
the pipeline family's own conditioning, denoiser call and decoder; the scheduler's update is replaced by an
elementwise one of the same size (memory and FLOPs are those of the denoiser, the VAE and the reward)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..pipelines.families import pipeline_family
from ..pipelines.lora import adapters_disabled

__all__ = ["StepSettings", "STEPS", "TRAINED"]


@dataclass(frozen=True)
class StepSettings:
    """What a step's size depends on: images per micro-batch, resolution, sampling steps, guidance, how many
    final steps keep gradients (DRaFT-K; AlignProp: all), checkpointing and the encoder options."""

    batch_size: int = 1
    height: int = 512
    width: int = 512
    num_inference_steps: int = 20
    guidance_scale: float = 1.0
    draft_k: int = 1
    gradient_checkpointing: bool = False
    decode_chunk_size: int = 1
    encode_kwargs: tuple[tuple[str, Any], ...] = ()


def _conditioning(family: Any, s: StepSettings, prompts: int, encoder: Any = None) -> Any:
    """``encoder``: what encodes the prompts (a ``PromptCache`` when the text encoders are released), else the
    family."""
    embeds = (encoder or family).encode(["a photo"] * prompts, guidance=family.uses_cfg(s.guidance_scale),
                                        **dict(s.encode_kwargs))
    return family.conditioning(embeds, s.guidance_scale, s.height, s.width)


def _latents(family: Any, s: StepSettings, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return family.pack(torch.randn(family.latent_shape(batch, s.height, s.width), device=device, dtype=dtype))


def _predict(family: Any, denoiser: Any, x: torch.Tensor, cond: Any, s: StepSettings, ckpt: bool) -> torch.Tensor:
    guided = family.uses_cfg(s.guidance_scale)
    t = torch.full((), 500.0, device=x.device)

    def call(x: torch.Tensor) -> torch.Tensor:
        out = family.predict(denoiser, torch.cat([x, x]) if guided else x, t, cond)
        return family.guide(out, s.guidance_scale) if guided else out

    return checkpoint(call, x, use_reentrant=False) if ckpt and torch.is_grad_enabled() else call(x)


def _sample(family: Any, denoiser: Any, s: StepSettings, batch: int, grad_steps: int, ckpt: bool,
            encoder: Any = None) -> torch.Tensor:
    """Latents after ``num_inference_steps`` denoiser calls, the last ``grad_steps`` with gradients."""
    p = next(denoiser.parameters())
    cond = _conditioning(family, s, batch, encoder)
    x = _latents(family, s, batch, p.device, denoiser.dtype)  # diffusers': its first floating weight's
    for i in range(s.num_inference_steps):
        with torch.set_grad_enabled(i >= s.num_inference_steps - grad_steps):
            x = x - 0.02 * _predict(family, denoiser, x, cond, s, ckpt)
    return x


def _decode(family: Any, x: torch.Tensor, s: StepSettings) -> torch.Tensor:
    return family.decode(x, s.height, s.width, chunk_size=s.decode_chunk_size, gradient_checkpointing=True)


def _update(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def backprop_step(pipe, denoiser, reward, params, optimizer, s: StepSettings, grad_steps: int,
                  encoder: Any = None) -> None:
    """DRaFT-K / ReFL (the last ``grad_steps`` calls keep gradients) and AlignProp (all of them, each call
    checkpointed): sample, decode, score, backpropagate the reward to the LoRA, step."""
    family = pipeline_family(pipe)
    x = _sample(family, denoiser, s, s.batch_size, grad_steps, s.gradient_checkpointing, encoder)
    _update(params, optimizer, -reward(_decode(family, x, s)).mean())


def policy_step(pipe, denoiser, reward, params, optimizer, s: StepSettings, encoder: Any = None) -> None:
    """DDPO / GRPO / NFT: rollouts without gradients, scored; then one denoiser call with gradients per
    trained timestep on the stored latents (the log-probability or NFT's two predictions are elementwise)."""
    family = pipeline_family(pipe)
    with torch.no_grad():
        x = _sample(family, denoiser, s, s.batch_size, 0, False, encoder)
        reward(_decode(family, x, s))
    cond = _conditioning(family, s, s.batch_size, encoder)
    with torch.no_grad(), adapters_disabled(denoiser):  # the reference / old policy's prediction
        ref = _predict(family, denoiser, x, cond, s, False)
    pred = _predict(family, denoiser, x, cond, s, False)
    _update(params, optimizer, (pred.float() - ref.float()).pow(2).mean())


def dpo_step(pipe, denoiser, reward, params, optimizer, s: StepSettings, encoder: Any = None) -> None:
    """Diffusion-DPO: encode winner and loser images, noise them, the policy's and the reference's predictions
    on both, the preference loss."""
    family = pipeline_family(pipe)
    vae = pipe.vae
    images = torch.rand(2 * s.batch_size, 3, s.height, s.width, device=next(vae.parameters()).device,
                        dtype=vae.dtype)
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample()
    x = family.pack(latents.to(denoiser.dtype))
    cond = _conditioning(family, s, 2 * s.batch_size, encoder)
    with torch.no_grad(), adapters_disabled(denoiser):
        ref = _predict(family, denoiser, x, cond, s, False)
    pred = _predict(family, denoiser, x, cond, s, False)
    err = (pred.float() - x.float()).pow(2).flatten(1).mean(1) - (ref.float() - x.float()).pow(2).flatten(1).mean(1)
    win, lose = err.chunk(2)
    _update(params, optimizer, -torch.nn.functional.logsigmoid(-(win - lose)).mean())


def best_of_n_step(pipe, denoiser, reward, params, optimizer, s: StepSettings, encoder: Any = None) -> None:
    """Best-of-N: ``batch_size`` candidates sampled, decoded and scored; nothing trained."""
    family = pipeline_family(pipe)
    with torch.no_grad():
        reward(_decode(family, _sample(family, denoiser, s, s.batch_size, 0, False, encoder), s))


STEPS: dict[str, Callable[..., None]] = {
    "draft": lambda *a, s, **k: backprop_step(*a, s, s.draft_k, **k),
    "refl": lambda *a, s, **k: backprop_step(*a, s, 1, **k),
    "alignprop": lambda *a, s, **k: backprop_step(*a, s, s.num_inference_steps, **k),
    "ddpo": lambda *a, s, **k: policy_step(*a, s, **k),
    "grpo": lambda *a, s, **k: policy_step(*a, s, **k),
    "nft": lambda *a, s, **k: policy_step(*a, s, **k),
    "dpo": lambda *a, s, **k: dpo_step(*a, s, **k),
    "best-of-n": lambda *a, s, **k: best_of_n_step(*a, s, **k),
}
TRAINED = tuple(m for m in STEPS if m != "best-of-n")  # methods with a LoRA and an optimizer
