"""What the inference-time reward methods share: one prompt's sampler, run by the shared loop from any
noise, with every weight frozen."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..rewards import Rewards, named_rewards, objective
from .families import Conditioning, pipeline_family
from .sampling import Guide, Trajectory, denoise, step_kwargs

__all__ = ["PromptSampler", "frozen_weights", "scored"]


def _call_default(pipe: Any, name: str) -> Any:
    param = inspect.signature(pipe.__call__).parameters.get(name)
    return None if param is None else param.default


class PromptSampler:
    """One prompt with one sampler set-up (steps, guidance scale, size), driven by ``sampling.denoise`` from
    any noise tensor: the images ``pipe(prompt, latents=..., generator=...)`` would make, with gradients.

    ``num_inference_steps`` and ``guidance_scale`` default to the pipeline's own
    ``__call__`` defaults, ``height`` / ``width`` to its default size;
    ``encode_kwargs`` are ``__call__``'s text options (``negative_prompt``,
    ``max_sequence_length``, ...). The scheduler is a private copy of the pipeline's.
    """

    def __init__(self, pipe: Any, prompt: str, *, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
                 eta: float = 0.0, **encode_kwargs: Any):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be one string, got {type(prompt).__name__}")
        self.family = family = pipeline_family(pipe)
        self.pipe, self.prompt, self.eta = pipe, prompt, eta
        steps = num_inference_steps if num_inference_steps is not None else _call_default(pipe, "num_inference_steps")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {steps!r}")
        self.num_inference_steps = steps
        self.guidance_scale = float(guidance_scale if guidance_scale is not None else family.call_guidance_scale({}))
        default_height, default_width = family.default_size()
        self.height, self.width = height or default_height, width or default_width
        family.check_size(self.height, self.width)
        self.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        self.embeds = family.encode(prompt, guidance=family.uses_cfg(self.guidance_scale), **encode_kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return self.family.denoiser.dtype

    @property
    def settings(self) -> dict[str, Any]:
        """What ``pipe(prompt, ...)`` needs besides ``latents`` and ``generator`` to make the same images."""
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "height": self.height, "width": self.width}

    def noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """The initial noise ``pipe(..., generator=[torch.Generator().manual_seed(s) for s in seeds])`` draws,
        in float32 on the pipeline's device."""
        return self.family.initial_noise(list(seeds), self.height, self.width, torch.float32)[0]

    def generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        """One ``Generator().manual_seed(s)`` per seed, past its initial noise draw: where the generators of
        ``pipe(generator=...)`` are when its stochastic scheduler steps begin."""
        return self.family.initial_noise(list(seeds), self.height, self.width, torch.float32)[1]

    def check_noise(self, noise: torch.Tensor, batch: int) -> None:
        shape = self.family.latent_shape(batch, self.height, self.width)
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != shape:
            seen = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must be a tensor of shape {shape} (the latent layout for {self.height}x"
                             f"{self.width}), got {seen}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise holds NaN or inf values; expected a finite Gaussian sample")

    def conditioning(self, batch: int) -> Conditioning:
        """The denoiser's fixed inputs for ``batch`` samples of the prompt."""
        embeds = {k: v.expand(batch, *v.shape[1:]) for k, v in self.embeds.items()}
        return self.family.conditioning(embeds, self.guidance_scale, self.height, self.width)

    def run(self, noise: torch.Tensor, seeds: Sequence[int], *, grad_from: int | None = None,
            latent_gradients: bool = False, guide: Guide | None = None, gradient_checkpointing: bool = False,
            base_prediction: Any = None) -> Trajectory:
        """The shared loop from ``noise`` (one per seed); stochastic steps draw from :meth:`generators`, so the
        seeds' own noise gives the images of ``pipe(prompt, generator=...)`` with those seeds."""
        latents, timesteps = self.family.start(self.scheduler, noise.to(self.dtype), self.num_inference_steps)
        generators = self.generators(seeds)
        cond = self.conditioning(len(seeds))
        return denoise(self.family, self.family.denoiser, self.scheduler, latents, cond, timesteps,
                       grad_from=grad_from, guidance_scale=self.guidance_scale,
                       gradient_checkpointing=gradient_checkpointing, base_prediction=base_prediction,
                       extra_step_kwargs=step_kwargs(self.scheduler, generators, self.eta),
                       latent_gradients=latent_gradients, guide=guide)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 images in [0, 1], with gradients."""
        return self.family.decode(latents, self.height, self.width)

    def images(self, noise: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """The images of ``noise``, without gradients."""
        with torch.no_grad():
            return self.decode(self.run(noise, seeds).latents)

    def pipe_latents(self, noise: torch.Tensor) -> torch.Tensor:
        """``noise`` as ``pipe(latents=...)`` takes it (packed where the family packs)."""
        return self.family.pack(noise)


def _modules(*objects: Any) -> Iterator[nn.Module]:
    for obj in objects:
        if isinstance(obj, Mapping):
            yield from _modules(*obj.values())
        elif isinstance(obj, nn.Module):
            yield obj
        elif hasattr(obj, "components"):  # a diffusers pipeline
            yield from _modules(*obj.components.values())


@contextmanager
def frozen_weights(*objects: Any) -> Iterator[None]:
    """Every parameter of the pipelines, modules and reward mappings given gets ``requires_grad=False``
    inside the block (no gradient, no graph through the weights); the flags are restored after it."""
    params = {id(p): p for module in _modules(*objects) for p in module.parameters()}
    saved = {key: p.requires_grad for key, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for key, p in params.items():
            p.requires_grad_(saved[key])


def scored(reward: Rewards, images: torch.Tensor, prompt: str,
           weights: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted objective (B,) and each named output (B,) of ``images`` for one prompt, gradients intact."""
    named = named_rewards(reward, images, [prompt] * len(images))
    return objective(named, weights), named
