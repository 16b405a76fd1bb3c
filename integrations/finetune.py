"""Reward fine-tuning of a diffusers pipeline's denoiser with LoRA: DRaFT-K, AlignProp, ReFL.

All methods run the same loop (``sampling.denoise``) and differ only in where it
keeps gradients (``methods``); the settings are in ``finetune_config``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reward.training import new_accelerator
from reward.utils import precision_dtype, progress_bar

from .decode import decode_latents
from .families import Conditioning, denoiser_family
from .finetune_config import RewardFinetuneConfig, require
from .grid import image_grid
from .lora import adapters_disabled, add_lora, lora_parameters, save_lora
from .methods import METHODS
from .reward_functions import Rewards, named_rewards, objective
from .sampling import denoise, guided_prediction, step_kwargs
from .training_log import TrainingLog

__all__ = ["RewardFinetuneConfig", "RewardFinetuner"]

class RewardFinetuner:
    """Fine-tune ``pipe``'s denoiser with LoRA to maximise ``reward``.

    Covered: every registered pipeline family (SD 1.x/2.x, SDXL, LCM, SD3,
    FLUX.1, PixArt-alpha/sigma; see ``integrations.families``).

    ``reward``: any form ``reward_functions`` accepts (``reward(images, prompts)``,
    image-only, trl's ``(images, prompts, metadata)``, ``nn.Module``, or a dict
    of them), differentiable in the images (in [0, 1]); ``prompts`` is the
    training prompt pool, sampled with replacement.
    ``accelerate`` handles device placement, mixed precision, gradient
    accumulation and multi-GPU; pass ``accelerator`` to reuse one.

    The pipeline is modified in place: after training, ``pipe(...)`` samples
    from the fine-tuned model.
    """

    def __init__(self, pipe: Any, reward: Rewards, prompts: Sequence[str], config: RewardFinetuneConfig | None = None,
                 accelerator: Any | None = None):
        self.config = config = config or RewardFinetuneConfig()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        require(bool(prompts) and all(isinstance(p, str) for p in prompts),
                 "prompts must be a non-empty list of strings (the training prompts)")
        self.prompts = prompts
        self.pipe, self.reward = pipe, reward
        self.family = denoiser_family(pipe)
        self.accelerator = accelerator or new_accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps)
        default_height, default_width = self.family.default_size()
        self.height, self.width = config.height or default_height, config.width or default_width
        self.family.check_size(self.height, self.width)
        self._setup_models()
        self.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        self.rng = torch.Generator().manual_seed(config.seed + self.accelerator.process_index)
        self.log = TrainingLog(asdict(config))
        self.global_step = 0

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
        self.lora_config = add_lora(denoiser, config.lora_rank, config.lora_alpha, config.lora_target_modules)
        params = lora_parameters(denoiser)
        for p in params:  # LoRA weights stay fp32 under fp16/bf16 mixed precision
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.model, self.optimizer = acc.prepare(denoiser, optimizer)
        self.params = params

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

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
        latents = self.family.vae_latents(trajectory.latents, self.height, self.width)
        images = decode_latents(self.pipe.vae, latents, chunk_size=cfg.decode_chunk_size,
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
        reward, named = self._score(images, prompts)
        loss = -reward.mean() + self.config.kl_coeff * penalty
        stats = {"reward": reward.detach(), "penalty": penalty.detach(), "loss": loss.detach(),
                 **{f"reward/{k}": v.detach() for k, v in named.items() if len(named) > 1}}
        return loss, stats

    # --- training ---------------------------------------------------------------------------------------

    def _batch(self) -> tuple[list[str], list[int]]:
        size = self.config.batch_size
        picks = torch.randint(len(self.prompts), (size,), generator=self.rng).tolist()
        seeds = torch.randint(0, 2**31 - 1, (size,), generator=self.rng).tolist()
        return [self.prompts[i] for i in picks], seeds

    def train_step(self) -> dict[str, float]:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches); returns the step's means."""
        acc, sums = self.accelerator, {}
        self.model.train()
        for _ in range(self.config.gradient_accumulation_steps):
            with acc.accumulate(self.model):
                loss, stats = self.compute_loss(*self._batch())
                acc.backward(loss)
                if acc.sync_gradients and self.config.max_grad_norm:
                    acc.clip_grad_norm_(self.params, self.config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + acc.gather(value.float().mean()[None]).mean().item()
        self.global_step += 1
        record = {"step": self.global_step, **{k: v / self.config.gradient_accumulation_steps
                                               for k, v in sums.items()}}
        self.log.append(record)
        return record

    def train(self, max_steps: int | None = None) -> TrainingLog:
        """Run ``max_steps`` optimizer steps (default: the config's), then write the log, reward curve
        and LoRA into ``output_dir`` (when set). Returns the log."""
        steps = self.config.max_steps if max_steps is None else max_steps
        bar = progress_bar(total=steps, desc=self.config.method, unit="step",
                           disable=not (self.config.progress_bar and self.accelerator.is_main_process))
        self._maybe_sample(force=True)
        for _ in range(steps):
            self.train_step()
            bar.set_postfix(reward=f"{self.log.smoothed_rewards()[-1]:.4f}")
            bar.update(1)
            self._maybe_sample()
        bar.close()
        self._finish()
        return self.log

    def _finish(self) -> None:
        if self.config.output_dir is None:
            return
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.log.write(self.config.output_dir)
            if self.config.save_lora:
                self.save_lora(Path(self.config.output_dir) / "lora")

    def _maybe_sample(self, force: bool = False) -> None:
        cfg = self.config
        due = cfg.sample_every and (force or self.global_step % cfg.sample_every == 0)
        if not due or cfg.output_dir is None or not self.accelerator.is_main_process:
            return
        prompts = [p for p in cfg.sample_prompts for _ in cfg.sample_seeds]
        seeds = [s for _ in cfg.sample_prompts for s in cfg.sample_seeds]
        images = self.sample(prompts, seeds)
        path = Path(cfg.output_dir) / "samples" / f"step_{self.global_step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image_grid(list(images), columns=len(cfg.sample_seeds)).save(path)

    # --- evaluation and saving --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int | None = None) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] from the current model with the training sampler, no gradients."""
        prompts, seeds = list(prompts), list(seeds)
        require(len(prompts) == len(seeds), f"got {len(prompts)} prompts for {len(seeds)} seeds")
        size = batch_size or self.config.batch_size
        # The unwrapped model: this may run on the main process alone, where a
        # DDP wrapper's collectives would hang.
        model = self.unwrapped.eval()
        out = []
        with self.accelerator.autocast():
            for i in range(0, len(prompts), size):
                out.append(self._images(model, prompts[i: i + size], seeds[i: i + size], grad_from=None)[0].float())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Per-image objective on fixed prompts and seeds (e.g. held-out seeds), on the CPU."""
        images = self.sample(prompts, seeds)
        return self._score(images, list(prompts))[0].float().cpu()

    def save_lora(self, directory: str | Path) -> Path:
        """Save the LoRA (unwrapped from accelerate) in diffusers format for ``pipe.load_lora_weights``."""
        return save_lora(self.pipe, self.unwrapped, directory, self.family.denoiser_name)

