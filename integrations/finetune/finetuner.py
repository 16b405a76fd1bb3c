"""Reward fine-tuning of a diffusers pipeline's denoiser with LoRA: DRaFT-K, AlignProp, ReFL.

All methods run the same loop (``pipelines.sampling.denoise``) and differ only in where it
keeps gradients (``finetune.methods``); the settings are in ``finetune.config``; the run itself
(processes, run folder, checkpoints and resumption, trackers, the step loop) is the base class's
(``finetune.base.DiffusionTrainer``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reward.utils import precision_dtype

from ..inference.grid import image_grid
from ..pipelines.families import Conditioning, denoiser_family
from ..pipelines.lora import adapters_disabled, add_lora, lora_parameters, named_lora_parameters, save_lora
from ..pipelines.sampling import denoise, guided_prediction, step_kwargs
from ..rewards import Rewards, named_rewards, objective
from .base import DiffusionTrainer, lr_schedule
from .config import RewardFinetuneConfig, require
from .ema import LoraEMA
from .identity import pipeline_identity, prompts_identity, reward_identity
from .log import gathered_statistics
from .methods import METHODS
from .prompt_sources import Prompts, PromptSource
from .tracking import log_grid

__all__ = ["RewardFinetuneConfig", "RewardFinetuner"]


class RewardFinetuner(DiffusionTrainer):
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

    The pipeline is modified in place: after training, ``pipe(...)`` samples
    from the fine-tuned model (the trained weights, not the EMA).
    """

    def __init__(self, pipe: Any, reward: Rewards, prompts: Prompts, config: RewardFinetuneConfig | None = None,
                 accelerator: Any | None = None):
        self.prompt_source = PromptSource(prompts)
        self.prompts = self.prompt_source.prompts
        self.pipe, self.reward = pipe, reward
        self.family = denoiser_family(pipe)
        super().__init__(config := config or RewardFinetuneConfig(), accelerator)
        self.name = config.method
        default_height, default_width = self.family.default_size()
        self.height, self.width = config.height or default_height, config.width or default_width
        self.family.check_size(self.height, self.width)
        self._setup_models()
        self.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        self.start_run()

    def _setup_models(self) -> None:
        config, acc = self.config, self.accelerator
        weight_dtype = precision_dtype(acc.mixed_precision) or torch.float32
        for module in self.pipe.components.values():
            if isinstance(module, nn.Module):
                module.requires_grad_(False)
        self.pipe.to(acc.device)
        if weight_dtype != torch.float32:  # frozen weights in half precision; LoRA cast back to fp32 below
            self.pipe.to(dtype=weight_dtype)
        for fn in self.reward.values() if isinstance(self.reward, Mapping) else [self.reward]:
            if isinstance(fn, nn.Module):
                # A fixed critic: its parameters must neither train nor pile up gradients nobody zeroes.
                fn.requires_grad_(False).eval().to(acc.device)
        denoiser = self.family.denoiser
        self.lora_config = add_lora(denoiser, config.lora_rank, config.lora_alpha, config.lora_target_modules,
                                    seed=config.seed)
        params = lora_parameters(denoiser)
        for p in params:  # LoRA weights stay fp32 under fp16/bf16 mixed precision
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        # Stepped once per optimizer step by the fine-tuner, not by accelerate (which steps it once per process).
        self.lr_scheduler = lr_schedule(config, optimizer)
        self.model, self.optimizer = acc.prepare(denoiser, optimizer)
        self.params = params
        self.ema = LoraEMA(params, config.ema_decay) if config.use_ema else None

    def trained_parameters(self) -> dict[str, torch.Tensor]:
        return named_lora_parameters(self.unwrapped)

    def run_identity(self) -> dict[str, str]:
        """The reward, the pipeline, the denoiser's architecture and the prompts (see ``finetune.identity``)."""
        source = self.prompt_source
        return {**super().run_identity(), **reward_identity(self.reward),
                **pipeline_identity(self.pipe, self.family, self.family.denoiser),
                **prompts_identity(source.prompts, source.prompt_fn)}

    # --- one batch -------------------------------------------------------------------------------------

    def _conditioning(self, prompts: list[str]) -> Conditioning:
        scale = self.config.guidance_scale
        embeds = self.family.encode(prompts, guidance=self.family.uses_cfg(scale),
                                    negative_prompt=self.config.negative_prompt, **self.config.encode_kwargs)
        return self.family.conditioning(embeds, scale, self.height, self.width)

    def _gradient_window(self, batch: int) -> tuple[torch.Tensor, int | None]:
        return METHODS[self.config.method](self.config, batch, self.rng)

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
                                           base=self.config.kl_coeff > 0)
        # Images a diverged LoRA made NaN are not shown to the reward (which would blame the images): their reward
        # is NaN, and the step's check names them (``images``: NaN per such image, in the statistics).
        finite = torch.isfinite(images.detach()).flatten(1).all(1)
        if not bool(finite.all()):
            images = torch.where(finite[:, None, None, None], images, torch.zeros_like(images))
        reward, named = self._score(images, prompts)
        nan = torch.full_like(reward, float("nan"))
        reward = torch.where(finite, reward, nan)
        loss = -reward.mean() + self.config.kl_coeff * penalty
        stats = {"images": torch.where(finite, torch.zeros_like(nan), nan), "reward": reward.detach(),
                 "penalty": penalty.detach(), "loss": loss.detach(),
                 **{f"reward/{k}": v.detach() for k, v in named.items() if len(named) > 1}}
        return loss, stats

    # --- training ---------------------------------------------------------------------------------------

    def _batch(self) -> tuple[list[str], list[int]]:
        size = self.config.batch_size
        prompts = self.prompt_source.draw(size, self.rng)
        seeds = torch.randint(0, 2**31 - 1, (size,), generator=self.rng).tolist()
        return prompts, seeds

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches per process); returns the step's
        statistics over every process: reward mean / std (per named output too), penalty, loss, gradient norm
        and learning rate. None when a non-finite batch was dropped (``on_nonfinite="skip"``)."""
        acc, cfg, stats, dropped = self.accelerator, self.config, [], False
        self.model.train()
        for _ in range(cfg.gradient_accumulation_steps):
            with acc.accumulate(self.model):  # entered every time: it counts the micro-batches
                if dropped:
                    continue
                loss, batch_stats = self.compute_loss(*self._batch())
                values = {k: v for k, v in batch_stats.items() if k == "images" or k.startswith("reward")}
                dropped = self.drop_batch(**values, loss=loss)
                batch_stats.pop("images")
                if not dropped:
                    acc.backward(loss)
                    if acc.sync_gradients:  # the norm before clipping; an infinite bound clips nothing
                        grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm or float("inf"))
                        dropped = self.drop_batch(grad_norm=torch.as_tensor(grad_norm))
                if not dropped:
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
            stats.append(batch_stats)
        if dropped:  # gradients of the micro-batches before the bad one
            for p in self.params:
                p.grad = None
            return None
        lr = self.lr_scheduler.get_last_lr()[0]
        if not self.optimizer.step_was_skipped:  # fp16 overflow: no step, so no schedule or EMA step either
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step()
        self.global_step += 1
        record = {"step": self.global_step, **gathered_statistics(acc, stats),
                  "grad_norm": float(grad_norm), "lr": lr}
        self.log.append(record)
        acc.log({k: v for k, v in record.items() if k != "step"}, step=self.global_step)
        return record

    def after_step(self, first: bool = False) -> None:
        """Save (and log) a sample grid every ``sample_every`` steps and before the first."""
        cfg = self.config
        due = cfg.sample_every and (first or self.global_step % cfg.sample_every == 0)
        if not due or self.run_dir is None or not self.accelerator.is_main_process:
            return
        prompts = [p for p in cfg.sample_prompts for _ in cfg.sample_seeds]
        seeds = [s for _ in cfg.sample_prompts for s in cfg.sample_seeds]
        grid = image_grid(list(self.sample(prompts, seeds)), columns=len(cfg.sample_seeds))
        path = self.run_dir / "samples" / f"step_{self.global_step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        log_grid(self.accelerator, "samples", grid, self.global_step)

    # --- evaluation and saving --------------------------------------------------------------------------

    def _evaluation_weights(self) -> Any:
        """The EMA weights inside the block when ``use_ema`` is on."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int | None = None) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] from the current model (its EMA when on) with the training sampler,
        no gradients."""
        prompts, seeds = list(prompts), list(seeds)
        require(len(prompts) == len(seeds), f"got {len(prompts)} prompts for {len(seeds)} seeds")
        size = batch_size or self.config.batch_size
        # The unwrapped model: this may run on the main process alone, where a
        # DDP wrapper's collectives would hang.
        model = self.unwrapped.eval()
        out = []
        with self._evaluation_weights(), self.accelerator.autocast():
            for i in range(0, len(prompts), size):
                out.append(self._images(model, prompts[i: i + size], seeds[i: i + size], grad_from=None)[0].float())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Per-image objective on fixed prompts and seeds (e.g. held-out seeds), on the CPU."""
        images = self.sample(prompts, seeds)
        return self._score(images, list(prompts))[0].float().cpu()

    def write_outputs(self, run_dir: Path) -> None:
        if self.config.save_lora:
            self.save_lora(run_dir / "lora")

    def save_lora(self, directory: str | Path) -> Path:
        """Save the LoRA (the EMA weights when ``use_ema`` is on) in diffusers format for
        ``pipe.load_lora_weights``."""
        with self._evaluation_weights():
            return save_lora(self.pipe, self.unwrapped, directory, self.family.denoiser_name)
