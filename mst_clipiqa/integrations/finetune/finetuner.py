"""Reward fine-tuning of a diffusers pipeline's denoiser with LoRA: DRaFT-K, AlignProp, ReFL.

All methods run the same loop (``pipelines.sampling.denoise``) and differ only in where it keeps gradients: a
method maps (config, batch size, generator) to ``(grad_from, stop_at)``, the first step with gradients per
trajectory and the step whose predicted x0 is decoded instead of finishing (None: finish); add one to
``METHODS``. The settings are in ``finetune.config``; the run itself
(processes, run folder, checkpoints and resumption, trackers, the step loop) is the base class's
(``finetune.base.DiffusionTrainer``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..pipelines.families import Conditioning
from ..pipelines.lora import adapters_disabled, named_lora_parameters
from ..pipelines.sampling import denoise, guided_prediction, step_kwargs
from ..rewards import Rewards, named_rewards, objective
from .config import RewardFinetuneConfig, require
from .monitor import HackingMonitor
from .prompt_sources import Prompts
from .prompted import PromptedTrainer

__all__ = ["METHODS", "GradientWindow", "RewardFinetuneConfig", "RewardFinetuner"]

GradientWindow = Callable[[Any, int, torch.Generator], "tuple[torch.Tensor, int | None]"]


def draft(config: RewardFinetuneConfig, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, int | None]:
    """DRaFT-K: gradients through the last ``draft_k`` steps of every trajectory."""
    return torch.full((batch,), config.num_inference_steps - config.draft_k), None


def alignprop(config: RewardFinetuneConfig, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, int | None]:
    """AlignProp: per trajectory, the last K steps, K uniform in ``alignprop_k_range``."""
    steps = config.num_inference_steps
    low, high = config.alignprop_k_range or (1, steps)
    return steps - torch.randint(low, high + 1, (batch,), generator=rng), None


def refl(config: RewardFinetuneConfig, batch: int, rng: torch.Generator) -> tuple[torch.Tensor, int | None]:
    """ReFL: one denoiser call with gradients at a random step among the last ``refl_window``."""
    steps = config.num_inference_steps
    stop = int(torch.randint(max(steps - config.refl_window, 0), steps, (1,), generator=rng))
    return torch.full((batch,), stop), stop


METHODS: dict[str, GradientWindow] = {"draft": draft, "alignprop": alignprop, "refl": refl}


class RewardFinetuner(PromptedTrainer):
    """Fine-tune ``pipe``'s denoiser with LoRA to maximise ``reward`` by backpropagating it through sampling.

    Covered: every registered pipeline family (SD 1.x/2.x, SDXL, LCM, SD3,
    FLUX.1, PixArt-alpha/sigma; see ``integrations.pipelines.families``).

    ``reward``: any form :mod:`integrations.rewards` accepts (``reward(images, prompts)``,
    image-only, trl's ``(images, prompts, metadata)``, ``nn.Module``, or a dict
    of them), differentiable in the images (in [0, 1]). ``prompts``: a list of
    training prompts (sampled with replacement), a ``pathlib.Path`` to a text
    file, or a DDPO-style ``prompt_fn() -> (prompt, metadata)`` (see ``PromptSource``).

    ``accelerate`` handles device placement, mixed precision, gradient
    accumulation and several processes: under ``torchrun`` or ``accelerate
    launch`` every process draws its own prompts and noise, gradients are
    averaged, and only the main process writes. Pass ``accelerator`` to reuse one.

    ``monitor``: scorers the run does not optimise (another MST model, a CLIP score, any reward form) or a
    :class:`HackingMonitor`, watched every ``monitor_every`` steps on ``monitor_prompts`` x ``monitor_seeds``
    (see :class:`DiffusionTrainer`); with ``patience`` the run stops early on reward hacking.

    The pipeline is modified in place: after training, ``pipe(...)`` samples
    from the fine-tuned model (the trained weights, not the EMA).
    """

    config_class = RewardFinetuneConfig
    config: RewardFinetuneConfig

    def __init__(self, pipe: Any, reward: Rewards, prompts: Prompts, config: RewardFinetuneConfig | None = None,
                 accelerator: Any | None = None, *, monitor: Rewards | HackingMonitor | None = None):
        super().__init__(pipe, reward, prompts, config, accelerator)
        config = self.config
        self.name = config.method
        default_height, default_width = self.family.default_size()
        self.height, self.width = config.run.height or default_height, config.run.width or default_width
        self.family.check_size(self.height, self.width)
        rewards = self.reward.values() if isinstance(self.reward, Mapping) else [self.reward]
        self.setup_lora(pipe, self.family, rewards)
        self.monitor = self.hacking_monitor(monitor, reward, config.reward_weights)
        self.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        self.prompt_cache = self.prompt_source.cache(self.family, config.run, guidance=self.family.uses_cfg(
            config.guidance_scale), **config.run.encode_kwargs)
        self.start_run()

    def trained_parameters(self) -> dict[str, torch.Tensor]:
        return named_lora_parameters(self.unwrapped)

    # --- one batch -------------------------------------------------------------------------------------

    def _conditioning(self, prompts: list[str]) -> Conditioning:
        scale = self.config.guidance_scale
        embeds = self.prompt_cache.encode(prompts, guidance=self.family.uses_cfg(scale),
                                    negative_prompt=self.config.run.negative_prompt, **self.config.run.encode_kwargs)
        return self.family.conditioning(embeds, scale, self.height, self.width)

    def _gradient_window(self, batch: int) -> tuple[torch.Tensor, int | None]:
        return METHODS[self.config.method](self.config, batch, self.shared_generator())

    def _base_prediction(self, cond: Conditioning) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with adapters_disabled(self.unwrapped):
                return guided_prediction(self.family, self.unwrapped, x, t, cond, self.config.guidance_scale)

        return predict

    def _images(self, model: nn.Module, prompts: list[str], seeds: Sequence[int], *,
                grad_from: torch.Tensor | int | None, stop_at: int | None = None,
                base: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        cond = self._conditioning(prompts)
        latents, timesteps, generators = self.family.prepare(self.scheduler, seeds, self.height, self.width,
                                                             cfg.num_inference_steps, torch.float32)
        trajectory = denoise(
            self.family, model, self.scheduler, latents, cond, timesteps,
            grad_from=grad_from, stop_at=stop_at, guidance_scale=cfg.guidance_scale,
            gradient_checkpointing=cfg.checkpoint_denoiser,
            base_prediction=self._base_prediction(cond) if base else None,
            extra_step_kwargs=step_kwargs(self.scheduler, generators, cfg.eta))
        images = self.family.decode(trajectory.latents, self.height, self.width, chunk_size=cfg.decode_chunk_size,
                                    gradient_checkpointing=cfg.decode_checkpointing)
        return images, trajectory.penalty

    def _score(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # The reward runs at its own precision, outside the generator's autocast.
        with torch.autocast(device_type=images.device.type, enabled=False):
            named = named_rewards(self.reward, images.float(), prompts)
        return objective(named, self.config.reward_weights), named

    def compute_loss(self, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss (lower is better) and detached statistics for one batch, with gradients to the LoRA weights."""
        prompts = list(prompts)
        require(len(prompts) == len(seeds), f"got {len(prompts)} prompts for {len(seeds)} seeds; "
                                             "expected one seed per prompt")
        grad_from, stop_at = self._gradient_window(len(prompts))
        with self.accelerator.autocast():
            images, penalty = self._images(self.model, prompts, seeds, grad_from=grad_from, stop_at=stop_at,
                                           base=self.config.base_distance_coeff > 0)
        # Images a diverged LoRA made NaN are not shown to the reward (which would blame the images): their reward
        # is NaN, and the step's check names them (``images``: NaN per such image, in the statistics).
        finite = torch.isfinite(images.detach()).flatten(1).all(1)
        if not bool(finite.all()):
            images = torch.where(finite[:, None, None, None], images, torch.zeros_like(images))
        reward, named = self._score(images, prompts)
        nan = torch.full_like(reward, float("nan"))
        reward = torch.where(finite, reward, nan)
        loss = -reward.mean() + self.config.base_distance_coeff * penalty
        stats = {"images": torch.where(finite, torch.zeros_like(nan), nan), "reward": reward.detach(),
                 "penalty": penalty.detach(), "loss": loss.detach(),
                 **{f"reward/{k}": v.detach() for k, v in named.items() if len(named) > 1}}
        return loss, stats

    # --- training ---------------------------------------------------------------------------------------

    def _batch(self) -> tuple[list[str], list[int]]:
        size = self.config.run.batch_size
        prompts = self.prompt_source.draw(size, self.rng)
        seeds = torch.randint(0, 2**31 - 1, (size,), generator=self.rng).tolist()
        return prompts, seeds

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches per process); returns the step's
        statistics over every process: reward mean / std (per named output too), penalty, loss, gradient norm
        and learning rate. None when a non-finite batch was dropped (``on_nonfinite="skip"``)."""
        acc, cfg, stats, dropped = self.accelerator, self.config, [], False
        self.model.train()
        for _ in range(cfg.run.gradient_accumulation_steps):
            with acc.accumulate(self.model):  # entered every time: it counts the micro-batches
                if dropped:
                    continue
                loss, batch_stats = self.compute_loss(*self._batch())
                values = {k: v for k, v in batch_stats.items() if k == "images" or k.startswith("reward")}
                dropped = self.backward_and_step(loss, **values)
                batch_stats.pop("images")
            stats.append(batch_stats)
        return None if dropped else self.record_step(stats, self.grad_norm, self.lr_scheduler.get_last_lr()[0])

    # --- evaluation and saving --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int | None = None) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] from the current model (its EMA when on) with the training sampler,
        no gradients."""
        prompts, seeds = list(prompts), list(seeds)
        require(len(prompts) == len(seeds), f"got {len(prompts)} prompts for {len(seeds)} seeds")
        size = batch_size or self.config.run.batch_size
        # The unwrapped model: this may run on the main process alone, where a
        # DDP wrapper's collectives would hang.
        model = self.unwrapped.eval()
        out = []
        with self.evaluation_weights(), self.accelerator.autocast():
            for i in range(0, len(prompts), size):
                out.append(self._images(model, prompts[i: i + size], seeds[i: i + size], grad_from=None)[0].float())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Per-image objective on fixed prompts and seeds (e.g. held-out seeds), on the CPU."""
        images = self.sample(prompts, seeds)
        return self._score(images, list(prompts))[0].float().cpu()
