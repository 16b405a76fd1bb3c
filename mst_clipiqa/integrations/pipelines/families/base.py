"""The pipeline-family protocol: what the shared denoising loop needs to know about one family of pipelines.

A family turns a diffusers text-to-image pipeline into the pieces of its own
``__call__``: encode the prompt, build the denoiser's inputs, apply guidance,
step the scheduler, decode. Subclass :class:`PipelineFamily`, override what
differs and register it with ``integrations.register_family``; see
``docs/pipeline_families.md``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..decode import decode_latents
from ..schedulers import predicted_x0

__all__ = ["Conditioning", "Embeddings", "PipelineFamily", "with_negative"]

Conditioning = dict[str, Any]
Embeddings = dict[str, torch.Tensor]

TEXT_KWARG = re.compile(r"^(negative_)?prompt(_\d)?$")
# encode_prompt arguments that are the caller's business, never __call__'s defaults
_CALLER_SET = ("prompt", "device", "num_images_per_prompt", "do_classifier_free_guidance")


def with_negative(embeds: Embeddings, name: str, guidance: bool) -> torch.Tensor:
    """``embeds[name]``, after ``embeds["negative_" + name]`` under classifier-free guidance (the order the
    pipelines use: unconditional half first)."""
    return torch.cat([embeds[f"negative_{name}"], embeds[name]]) if guidance else embeds[name]


class PipelineFamily:
    """How to run one family of diffusers pipelines step by step, as its own ``__call__`` does.

    Class attributes: ``pipelines`` (the pipeline class names it covers;
    subclasses of those are covered too), ``denoiser_name`` (the pipeline
    attribute holding the denoiser, ``"unet"`` or ``"transformer"``) and
    ``encode_outputs`` (what the pipeline's ``encode_prompt`` returns, named as
    ``__call__`` takes it back; None skips an output).

    The hooks, in the order the loop calls them (override only what differs):

    1. prompts: :meth:`encode`, :meth:`uses_cfg`, :meth:`conditioning` (the
       denoiser inputs that stay fixed along the trajectory);
    2. latents: :meth:`latent_shape`, :meth:`set_timesteps`,
       :meth:`initial_noise`, :meth:`prepare_latents` (from any noise tensor; :meth:`start` sets the
       timesteps and calls it);
    3. one step: :meth:`model_input`, :meth:`predict` (one denoiser call),
       :meth:`guide` (classifier-free guidance), :meth:`step` and
       :meth:`predicted_x0` (the clean latents predicted at this step);
    4. images: :meth:`vae_latents`, :meth:`decode`.

    Best-of-N also uses :meth:`call_kwargs` (the embeddings handed back to ``pipe(...)``).
    """

    pipelines: ClassVar[tuple[str, ...]] = ()
    denoiser_name: ClassVar[str] = "unet"
    encode_outputs: ClassVar[tuple[str | None, ...]] = ("prompt_embeds", "negative_prompt_embeds")

    def __init__(self, pipe: Any):
        self.pipe = pipe

    @property
    def denoiser(self) -> nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    def default_size(self) -> tuple[int, int]:
        side = int(self.denoiser.config.sample_size) * int(self.pipe.vae_scale_factor)
        return side, side

    def check_size(self, height: int, width: int) -> None:
        multiple = int(self.pipe.vae_scale_factor) * self._latent_multiple()
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} for this pipeline, "
                             f"got {height}x{width}")

    def _latent_multiple(self) -> int:
        return int(getattr(self.denoiser.config, "patch_size", None) or 1)

    # --- 1. prompts ------------------------------------------------------------------------------------

    def encode(self, prompt: str | Sequence[str], *, guidance: bool = False, num_images_per_prompt: int = 1,
               **encode_kwargs: Any) -> Embeddings:
        """Run the pipeline's ``encode_prompt`` once, without gradients, and name its outputs.

        ``encode_kwargs`` are ``__call__``'s text options (``negative_prompt``,
        ``prompt_2``, ``max_sequence_length``, ...); those left out or None take
        ``__call__``'s defaults, so the embeddings are the ones ``pipe(prompt, ...)``
        computes. One negative prompt serves every prompt. Where
        ``encode_prompt`` takes no negative prompt (Flux), it is encoded as a
        second prompt.
        """
        accepted = inspect.signature(self.pipe.encode_prompt).parameters
        call_defaults = {name: p.default for name, p in inspect.signature(self.pipe.__call__).parameters.items()
                         if p.default is not inspect.Parameter.empty and p.default is not None}
        options = {k: v for k, v in encode_kwargs.items() if v is not None}
        for name in accepted:
            if name not in options and name in call_defaults and name not in _CALLER_SET and "_embeds" not in name:
                options[name] = call_defaults[name]
        if not isinstance(prompt, str):
            prompt = list(prompt)
            for name, value in options.items():  # a list of prompts needs a list of negative prompts
                if name.startswith("negative_prompt") and isinstance(value, str):
                    options[name] = [value] * len(prompt)
        separate = {k[len("negative_"):]: options.pop(k) for k in list(options)
                    if k.startswith("negative_prompt") and k not in accepted}
        call = {"prompt": prompt, "device": self.pipe._execution_device, "num_images_per_prompt": num_images_per_prompt,
                "do_classifier_free_guidance": guidance, **options}
        for name, param in accepted.items():  # SD3 requires prompt_2 / prompt_3 (None: reuse prompt)
            if name not in call and param.default is inspect.Parameter.empty and TEXT_KWARG.match(name):
                call[name] = None
        embeds = self._named({k: v for k, v in call.items() if k in accepted})
        if separate.get("prompt") is not None:
            negative = {k: v for k, v in {**call, **separate}.items() if k in accepted}
            embeds.update({f"negative_{k}": v for k, v in self._named(negative).items()})
        return embeds

    def _named(self, call: dict[str, Any]) -> Embeddings:
        with torch.no_grad():
            outputs = self.pipe.encode_prompt(**call)
        return {name: t for name, t in zip(self.encode_outputs, outputs) if name is not None and t is not None}

    def call_kwargs(self, embeds: Embeddings) -> dict[str, Any]:
        """``pipe(...)`` keyword arguments that hand ``embeds`` (from :meth:`encode`) back to ``__call__``."""
        return dict(embeds)

    def uses_cfg(self, guidance_scale: float) -> bool:
        """Whether ``guidance_scale`` means classifier-free guidance (two predictions per step)."""
        return guidance_scale > 1.0

    def call_guidance_scale(self, call_kwargs: dict[str, Any]) -> float:
        """The guidance scale ``pipe(**call_kwargs)`` runs with (its default when not given)."""
        if "guidance_scale" in call_kwargs:
            return float(call_kwargs["guidance_scale"])
        default = inspect.signature(self.pipe.__call__).parameters.get("guidance_scale")
        return float(default.default) if default is not None and isinstance(default.default, (int, float)) else 1.0

    def conditioning(self, embeds: Embeddings, guidance_scale: float, height: int, width: int) -> Conditioning:
        """Denoiser inputs that stay fixed along the trajectory (unconditional half first under CFG)."""
        raise NotImplementedError(f"{type(self).__name__} must define conditioning()")

    # --- 2. latents ------------------------------------------------------------------------------------

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of the initial noise, in the VAE's latent layout."""
        factor = int(self.pipe.vae_scale_factor)
        return batch, int(self.denoiser.config.in_channels), height // factor, width // factor

    def set_timesteps(self, scheduler: Any, num_steps: int, shape: tuple[int, ...], device: torch.device) -> None:
        scheduler.set_timesteps(num_steps, device=device)

    def initial_noise(self, seeds: Sequence[int], height: int, width: int,
                      dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Generator]]:
        """The noise ``pipe(..., generator=[torch.Generator().manual_seed(s) for s in seeds])`` starts from,
        and those generators (stochastic scheduler steps go on drawing from them)."""
        from diffusers.utils.torch_utils import randn_tensor

        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        shape = self.latent_shape(len(generators), height, width)
        return randn_tensor(shape, generator=generators, device=self.pipe._execution_device, dtype=dtype), generators

    def pack(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise in the VAE's latent layout -> the denoiser's layout (Flux packs 2x2 patches)."""
        return noise

    def prepare_latents(self, scheduler: Any, noise: torch.Tensor) -> torch.Tensor:
        """Initial latents from a noise tensor of :meth:`latent_shape` (after :meth:`set_timesteps`)."""
        return self.pack(noise) * getattr(scheduler, "init_noise_sigma", 1.0)

    def prepare(
        self, scheduler: Any, seeds: Sequence[int], height: int, width: int, num_steps: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator]]:
        """Set the scheduler's timesteps and draw the initial latents exactly as the pipeline does for
        one CPU generator per seed. Returns (latents, timesteps, generators)."""
        self.check_size(height, width)
        noise, generators = self.initial_noise(seeds, height, width, dtype)
        latents, timesteps = self.start(scheduler, noise, num_steps)
        return latents, timesteps, generators

    def start(self, scheduler: Any, noise: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Set the scheduler's timesteps for ``noise`` (of :meth:`latent_shape`) and return (the initial latents
        from that noise, the timesteps): a fresh trajectory from any noise tensor, e.g. one being optimised."""
        self.set_timesteps(scheduler, num_steps, tuple(noise.shape), self.pipe._execution_device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return self.prepare_latents(scheduler, noise), scheduler.timesteps

    # --- 3. one step -----------------------------------------------------------------------------------

    def model_input(self, scheduler: Any, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The latents as the denoiser takes them at timestep ``t`` (scheduler input scaling)."""
        scale = getattr(scheduler, "scale_model_input", None)
        return scale(latents, t) if scale is not None else latents

    def predict(self, denoiser: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One denoiser call on ``x`` (both CFG halves stacked when guided), in the scheduler's terms."""
        raise NotImplementedError(f"{type(self).__name__} must define predict()")

    def guide(self, output: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Combine the (unconditional, conditional) halves of a guided prediction."""
        uncond, text = output.chunk(2)
        return uncond + guidance_scale * (text - uncond)

    def step(self, scheduler: Any, model_output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor,
             step_kwargs: dict[str, Any]) -> torch.Tensor:
        """The scheduler step from ``latents`` at ``t`` to the next latents."""
        return scheduler.step(model_output, t, latents, **step_kwargs, return_dict=False)[0]

    def predicted_x0(self, scheduler: Any, model_output: torch.Tensor, step_index: int, t: torch.Tensor,
                     latents: torch.Tensor) -> torch.Tensor:
        """The clean latents the denoiser predicts at this step, leaving the scheduler as it was (see
        ``schedulers.predicted_x0``)."""
        return predicted_x0(scheduler, model_output, step_index, t, latents)

    # --- 4. images -------------------------------------------------------------------------------------

    def vae_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents as the VAE expects them (still in denoiser scaling)."""
        return latents

    def decode(self, latents: torch.Tensor, height: int, width: int, *, chunk_size: int = 1,
               gradient_checkpointing: bool = True) -> torch.Tensor:
        """(B, 3, H, W) float32 images in [0, 1], with gradients (see ``decode_latents``)."""
        return decode_latents(self.pipe.vae, self.vae_latents(latents, height, width), chunk_size=chunk_size,
                              gradient_checkpointing=gradient_checkpointing)
