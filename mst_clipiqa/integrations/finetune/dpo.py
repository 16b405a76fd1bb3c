"""Diffusion-DPO on the shared run plumbing: the pairs split over the processes, the loss of
``dpo_objective.DiffusionDPOObjective``, checkpoints that resume bit for bit, trackers, schedules, the EMA and
the hacking monitor of :class:`DiffusionTrainer`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.reward.utils import option

from ..pipelines.lora import named_lora_parameters
from ..rewards import Rewards, score_images
from .base import DiffusionTrainer
from .config import RunConfig, require
from .dpo_objective import BETA_SD15, DiffusionDPOObjective, pair_batch
from .launch import pipeline_precision
from .monitor import HackingMonitor, pipeline_sampler

__all__ = ["DPOConfig", "DPOTrainer", "train_dpo"]


@dataclass
class DPOConfig(RunConfig):
    """Settings of a Diffusion-DPO run: the run fields of :class:`RunConfig` (shared with
    :class:`RewardFinetuneConfig`; ``batch_size`` counts pairs per micro-batch and process) and ``beta``,
    :data:`BETA_SD15` (5000, the paper's SD 1.5 run), the strength of the pull back to the reference."""

    beta: float = option(BETA_SD15, "Diffusion-DPO: strength of the pull to the reference (the paper's SD 1.5 "
                                    "run: 5000; diffusers' example: 2500)")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.beta > 0 and self.beta != float("inf"), f"beta must be a finite number > 0, got {self.beta!r}")


def _rows(pairs: Any) -> Any:
    if isinstance(pairs, (str, Path)):
        from ..inference.preference_pairs import load_pairs

        return load_pairs(pairs)
    if len(pairs) == 0:
        raise ValueError("pairs is empty; expected Diffusion-DPO rows (jpg_0, jpg_1, label_0, caption)")
    return pairs


class DPOTrainer(DiffusionTrainer):
    """Fine-tune ``pipe``'s denoiser with a fresh LoRA by Diffusion-DPO on ``pairs`` (a folder written by
    ``preference_pairs``, a ``datasets.Dataset`` or a list of Diffusion-DPO rows).

    Every process draws its pairs from its own share of the rows (row ``i`` belongs to process
    ``i % num_processes``); accelerate averages the gradients, so every process holds the same LoRA.
    ``reward`` (optional, the scorer the pairs were labelled by) is what :meth:`evaluate` scores and what the
    hacking monitor's patience rule watches rise; ``monitor`` as for :class:`RewardFinetuner`. Each step's
    record has ``loss``, ``implicit_accuracy``, the error gaps, and as ``reward`` the implicit reward margin
    of the winners (``reward_margin``). The pipeline is changed in place.
    """

    name = "dpo"
    config_class = DPOConfig

    def __init__(self, pipe: Any, pairs: Any, config: DPOConfig | None = None, accelerator: Any | None = None, *,
                 reward: Rewards | None = None, monitor: Rewards | HackingMonitor | None = None):
        super().__init__(config := pipeline_precision(config or DPOConfig(), pipe, accelerator), accelerator)
        self.pipe, self.reward, self.rows = pipe, reward, _rows(pairs)
        acc = self.accelerator
        self.shard = list(range(acc.process_index, len(self.rows), acc.num_processes))
        require(bool(self.shard), f"{len(self.rows)} pairs for {acc.num_processes} processes; expected at least "
                                  "one pair per process")
        self.objective = DiffusionDPOObjective(pipe, beta=config.beta, guidance_scale=config.guidance_scale,
                                               height=config.height, width=config.width,
                                               encode_kwargs=config.encode_kwargs)
        self.family = self.objective.family
        self.setup_lora(pipe, self.family.denoiser, [reward] if reward is not None else [])
        self.monitor = self.hacking_monitor(monitor, reward)
        self._sampler = pipeline_sampler(pipe, chunk_size=config.batch_size,
                                         num_inference_steps=config.num_inference_steps,
                                         guidance_scale=config.guidance_scale, height=self.objective.height,
                                         width=self.objective.width)
        self.start_run()

    def trained_parameters(self) -> dict[str, torch.Tensor]:
        return named_lora_parameters(self.unwrapped)

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        picked = torch.randint(0, len(self.shard), (self.config.batch_size,), generator=self.rng).tolist()
        winners, losers, prompts = pair_batch([self.rows[self.shard[i]] for i in picked], self.objective.height,
                                              self.objective.width)
        device = self.accelerator.device
        return winners.to(device), losers.to(device), prompts

    def train_step(self) -> dict[str, float]:
        """One optimizer step on ``batch_size`` pairs per micro-batch and process; returns the step's
        statistics over every process."""
        acc, cfg, stats = self.accelerator, self.config, []
        self.model.train()
        for _ in range(cfg.gradient_accumulation_steps):
            with acc.accumulate(self.model):
                with acc.autocast():
                    loss, batch_stats = self.objective.loss(*self._pairs(), self.rng, denoiser=self.model)
                acc.backward(loss)
                if acc.sync_gradients:  # the norm before clipping; an infinite bound clips nothing
                    grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm or float("inf"))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            stats.append({"reward": batch_stats["reward_margin"], **batch_stats})
        return self.record_step(stats, grad_norm, self.lr_scheduler.get_last_lr()[0])

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] from the pipeline as it is now (its EMA when on), one per (prompt,
        seed), with the config's sampling settings."""
        self.unwrapped.eval()
        with self.evaluation_weights():
            return self._sampler(list(prompts), list(seeds))

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Per-image ``reward`` on fixed prompts and seeds (e.g. held-out seeds), on the CPU."""
        require(self.reward is not None, "evaluate needs the trainer's reward= (the scorer to evaluate by)")
        images = self.sample(prompts, seeds)
        return score_images(self.reward, images, list(prompts), batch_size=self.config.batch_size)[0].float().cpu()


def train_dpo(pipe: Any, pairs: Any, config: DPOConfig | None = None, *, monitor: Any = None,
              progress: bool = True) -> list[dict[str, float]]:
    """Diffusion-DPO in this process with :class:`DPOTrainer`, returning one record per step (loss, implicit
    accuracy and reward margin, error gaps, gradient norm). ``monitor``: a :class:`HackingMonitor` (or any
    ``monitor(step, state=...)`` with ``should_stop`` and ``best_state``), called before training and after
    every step; when it stops the run, the LoRA weights it preferred are put back."""
    config = dataclasses.replace(config or DPOConfig(), progress_bar=progress)
    return DPOTrainer(pipe, pairs, config, monitor=monitor).train().history
