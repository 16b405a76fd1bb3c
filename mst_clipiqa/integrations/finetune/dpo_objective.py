"""Diffusion-DPO (Wallace et al. 2023): LoRA on the denoiser, trained on preference pairs against the frozen
reference (the same denoiser with its LoRA switched off).

For a pair (winner ``x_w``, loser ``x_l``) with one shared timestep and noise, ``e`` the per-sample
squared error of the denoiser's prediction (noise or v for UNet families, velocity ``noise - x0`` for
flow families) and ``e_ref`` the reference's, the loss is
``-log sigmoid(-beta / 2 * ((e_w - e_ref_w) - (e_l - e_ref_l)))``; the number of training timesteps is
folded into ``beta``, as in the reference code. At initialisation the policy is the reference and the
loss is ``log 2``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..pipelines.families import Conditioning, pipeline_family
from ..pipelines.lora import adapters_disabled
from ..pipelines.schedulers import is_flow_scheduler
from .dpo_config import BETA_DIFFUSERS, BETA_SD15
from .pair_rows import TIE, row_problem

__all__ = ["BETA_DIFFUSERS", "BETA_SD15", "DiffusionDPOObjective", "dpo_loss", "image_latents", "pair_batch"]



def dpo_loss(errors_w: torch.Tensor, errors_l: torch.Tensor, ref_errors_w: torch.Tensor, ref_errors_l: torch.Tensor,
             beta: float = BETA_SD15) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The Diffusion-DPO loss (mean over pairs) from per-pair (B,) squared errors of the policy and the
    reference on the winners and the losers, and detached statistics: ``reward_margin`` (the mean implicit
    reward of the winner over the loser, the argument of the sigmoid; 0 at initialisation),
    ``implicit_accuracy`` (the share of pairs where it is > 0) and the error gaps."""
    shapes = {tuple(t.shape) for t in (errors_w, errors_l, ref_errors_w, ref_errors_l)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"the four error tensors must share one (B,) shape, got {sorted(shapes)}")
    model_gap, ref_gap = errors_w - errors_l, (ref_errors_w - ref_errors_l).detach()
    inside = -0.5 * float(beta) * (model_gap - ref_gap)
    loss = -F.logsigmoid(inside).mean()
    stats = {"loss": loss.detach(), "reward_margin": inside.detach().mean(),
             "implicit_accuracy": (inside.detach() > 0).float().mean(),
             "model_gap": model_gap.detach().mean(), "ref_gap": ref_gap.mean(),
             "error_w": errors_w.detach().mean(), "error_l": errors_l.detach().mean()}
    return loss, stats


def image_latents(pipe: Any, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> the VAE's latents in denoiser scaling (a sample of the posterior, as
    the training scripts draw it), the inverse of ``decode.unscale_latents``."""
    vae = pipe.vae
    with torch.no_grad():
        posterior = vae.encode((images * 2 - 1).to(vae.device, vae.dtype)).latent_dist
        z = posterior.sample(generator).float()
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, device=z.device).view(1, -1, 1, 1)
        std = torch.tensor(std, device=z.device).view(1, -1, 1, 1)
        return (z - mean) * config.scaling_factor / std
    return (z - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor


class DiffusionDPOObjective:
    """The Diffusion-DPO loss of a batch of pairs for any registered pipeline family.

    UNet families (SD 1.x/2.x, SDXL, LCM, PixArt) are noised by the DDPM forward process of their
    scheduler's training schedule, at integer timesteps drawn uniformly, and the target is the noise
    (or v, for v-prediction); flow families (SD3, FLUX.1) are noised as ``x_t = (1 - s) x0 + s noise`` at
    ``s`` drawn uniformly in (0, 1), target ``noise - x0``. Winner and loser share ``t`` and the noise.
    ``guidance_scale`` is what the denoiser is conditioned on (no classifier-free guidance: 1.0; the
    FLUX.1 guidance embedding takes it); ``encode_kwargs`` are the pipeline's text options.
    """

    def __init__(self, pipe: Any, *, beta: float = BETA_SD15, guidance_scale: float = 1.0,
                 height: int | None = None, width: int | None = None, encode_kwargs: Mapping[str, Any] | None = None):
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        self.pipe, self.family, self.beta = pipe, pipeline_family(pipe), float(beta)
        self.guidance_scale = float(guidance_scale)
        default_height, default_width = self.family.default_size()
        self.height, self.width = height or default_height, width or default_width
        self.family.check_size(self.height, self.width)
        self.encode_kwargs = dict(encode_kwargs or {})
        self.encoder: Any = self.family  # what encodes the captions: the family, or a trainer's PromptCache
        self.flow = is_flow_scheduler(pipe.scheduler)
        if not self.flow:
            from diffusers import DDPMScheduler

            self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def conditioning(self, prompts: Sequence[str]) -> Conditioning:
        embeds = self.encoder.encode(list(prompts), guidance=False, **self.encode_kwargs)
        return self.family.conditioning(embeds, self.guidance_scale, self.height, self.width)

    def noised(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, the denoiser's timestep, the target) for clean latents ``x0``, (2B, ...) with winners first:
        one draw of timestep and noise per pair, shared by its winner and loser."""
        pairs = len(x0) // 2
        noise = torch.randn((pairs, *x0.shape[1:]), generator=generator).to(x0).repeat(2, *[1] * (x0.ndim - 1))
        if self.flow:
            sigma = torch.rand((pairs,), generator=generator).to(x0).repeat(2)
            s = sigma.view(-1, *[1] * (x0.ndim - 1))
            x_t, target, t = (1 - s) * x0 + s * noise, noise - x0, sigma * 1000
        else:
            steps = self.noise_scheduler.config.num_train_timesteps
            t = torch.randint(0, steps, (pairs,), generator=generator).to(x0.device).repeat(2)
            x_t = self.noise_scheduler.add_noise(x0, noise, t)
            kind = self.noise_scheduler.config.prediction_type
            target = self.noise_scheduler.get_velocity(x0, noise, t) if kind == "v_prediction" else noise
        return self.family.pack(x_t), t, self.family.pack(target)

    def errors(self, denoiser: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
               target: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared error of the denoiser's prediction, float32."""
        pred = self.family.predict(denoiser, x_t.to(self.family.denoiser.dtype), t, cond)
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)

    def loss(self, winners: torch.Tensor, losers: torch.Tensor, prompts: Sequence[str],
             generator: torch.Generator, denoiser: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The loss of ``B`` pairs ((B, 3, H, W) winner and loser images in [0, 1], one prompt each), gradients
        to the LoRA weights of ``denoiser`` (default: the pipeline's; pass a DDP-wrapped one to train it), and
        detached statistics."""
        if winners.shape != losers.shape or len(winners) != len(prompts):
            raise ValueError(f"expected winners and losers of one shape with one prompt per pair, got "
                             f"{tuple(winners.shape)}, {tuple(losers.shape)} and {len(prompts)} prompts")
        denoiser = self.family.denoiser if denoiser is None else denoiser
        x0 = image_latents(self.pipe, torch.cat([winners, losers]), generator)
        x_t, t, target = self.noised(x0, generator)
        cond = self.conditioning(list(prompts) * 2)
        errors = self.errors(denoiser, x_t, t, cond, target)
        with torch.no_grad(), adapters_disabled(self.family.denoiser):
            ref_errors = self.errors(denoiser, x_t, t, cond, target)
        return dpo_loss(*errors.chunk(2), *ref_errors.chunk(2), beta=self.beta)


def _image(data: bytes | Any, height: int, width: int, where: str) -> torch.Tensor:
    from PIL import Image

    from mst_clipiqa.reward import load_image

    try:
        image = Image.open(io.BytesIO(data)) if isinstance(data, (bytes, bytearray)) else data
        pixels = load_image(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{where} is not a decodable image ({error})") from None
    if tuple(pixels.shape[-2:]) != (height, width):
        pixels = F.interpolate(pixels[None], size=(height, width), mode="bilinear", antialias=True)[0].clamp(0, 1)
    return pixels


def pair_batch(rows: Sequence[Mapping[str, Any]], height: int, width: int, row_ids: Sequence[int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(winners, losers, captions) of Diffusion-DPO rows (``jpg_0``, ``jpg_1`` as encoded bytes or PIL images,
    ``label_0`` 1 when ``jpg_0`` is preferred and 0 when ``jpg_1`` is, ``caption``), each image resized to
    ``height`` x ``width``. A bad row is a ``ValueError`` naming it (by ``row_ids``, default its position)."""
    winners, losers = [], []
    for k, row in enumerate(rows):
        where = f"pair row {k if row_ids is None else row_ids[k]}"
        problem = row_problem(row)
        if problem == TIE:
            raise ValueError(f"{where} has label_0 = 0.5: a tie states no preference; drop ties first "
                             "(--drop-ties, or dataset.filter(lambda r: r['label_0'] != 0.5))")
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
        first, second = (_image(row[c], height, width, f"{where}: {c}") for c in ("jpg_0", "jpg_1"))
        win, lose = (first, second) if row["label_0"] == 1 else (second, first)
        winners.append(win)
        losers.append(lose)
    return torch.stack(winners), torch.stack(losers), [row["caption"] for row in rows]
