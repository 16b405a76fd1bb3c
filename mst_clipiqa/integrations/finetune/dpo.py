"""Diffusion-DPO on the shared run plumbing: the pairs split over the processes, the loss of
``dpo_objective.DiffusionDPOObjective``, checkpoints that resume bit for bit, trackers, schedules, the EMA and
the hacking monitor of :class:`DiffusionTrainer`."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..inference.best_of_n import encode_for_sampling
from ..pipelines.lora import named_lora_parameters
from ..pipelines.prompt_cache import PromptCache
from ..rewards import Rewards, score_images
from .base import DiffusionTrainer
from .config import require
from .dpo_config import DPOConfig
from .dpo_objective import DiffusionDPOObjective, pair_batch
from .identity import pairs_identity, pipeline_identity, reward_identity
from .launch import pipeline_precision
from .monitor import HackingMonitor, pipeline_sampler
from .pair_rows import check_pairs

__all__ = ["DPOConfig", "DPOTrainer", "train_dpo"]


def _rows(pairs: Any, config: DPOConfig) -> Any:
    if isinstance(pairs, (str, Path)):
        from ..inference.preference_pairs import load_pairs

        pairs = load_pairs(pairs)
    return check_pairs(pairs, drop_invalid=config.drop_invalid, drop_ties=config.drop_ties,
                       check_rows=config.check_rows)


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
    config: DPOConfig

    def progress_key(self) -> str:
        """Not the reward's scale: DPO's number is the implicit reward margin, a difference of log-likelihood ratios."""
        return "implicit margin (log-ratio)"

    def __init__(self, pipe: Any, pairs: Any, config: DPOConfig | None = None, accelerator: Any | None = None, *,
                 reward: Rewards | None = None, monitor: Rewards | HackingMonitor | None = None):
        super().__init__(config := pipeline_precision(config or DPOConfig(), pipe, accelerator), accelerator)
        self.pipe, self.reward, self.rows = pipe, reward, _rows(pairs, config)
        acc = self.accelerator
        self.shard = list(range(acc.process_index, len(self.rows), acc.num_processes))
        require(bool(self.shard), f"{len(self.rows)} pairs for {acc.num_processes} processes; expected at least "
                                  "one pair per process")
        self.objective = DiffusionDPOObjective(pipe, beta=config.beta, guidance_scale=config.guidance_scale,
                                               height=config.run.height, width=config.run.width,
                                               encode_kwargs=config.run.encode_kwargs)
        self.family = self.objective.family
        self.setup_lora(pipe, self.family, [reward] if reward is not None else [])
        self.monitor = self.hacking_monitor(monitor, reward)
        sampling = {"num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
                    "height": self.objective.height, "width": self.objective.width}
        self.prompt_cache = self.objective.encoder = self._encode_prompts(sampling)
        self._sampler = pipeline_sampler(pipe, chunk_size=config.run.batch_size, encoder=self.prompt_cache,
                                         **sampling)
        self.start_run()

    def _encode_prompts(self, sampling: dict[str, Any]) -> PromptCache:
        """Each caption and sample / monitor prompt encoded once (alone, kept on the CPU), then the text encoders
        released as ``run.text_encoders`` says. Released, they first encode every caption of this process's
        pairs (``offload`` brings them back for a prompt not seen yet); kept, each caption as it comes."""
        run = self.config.run
        cache = PromptCache(self.family, run.text_encoders)
        if run.text_encoders != "keep":
            captions = list(dict.fromkeys(self.rows[i]["caption"] for i in self.shard))
            for start in range(0, len(captions), run.batch_size):  # only a batch's embeddings on the GPU at once
                cache.encode(captions[start:start + run.batch_size], guidance=False, **run.encode_kwargs)
        return encode_for_sampling(self.pipe, [*run.sample_prompts, *run.monitor_prompts], cache=cache, **sampling)

    def trained_parameters(self) -> dict[str, torch.Tensor]:
        return named_lora_parameters(self.unwrapped)

    def run_identity(self) -> dict[str, str]:
        """The pairs (by content), the reward (when given), the pipeline and the denoiser's architecture."""
        reward = reward_identity(self.reward) if self.reward is not None else {"reward": "none"}
        return {**super().run_identity(), **pairs_identity(self.rows), **reward,
                **pipeline_identity(self.pipe, self.family, self.family.denoiser)}

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        picked = torch.randint(0, len(self.shard), (self.config.run.batch_size,), generator=self.rng).tolist()
        ids = [self.shard[i] for i in picked]
        winners, losers, prompts = pair_batch([self.rows[i] for i in ids], self.objective.height,
                                              self.objective.width, row_ids=ids)
        device = self.accelerator.device
        return winners.to(device), losers.to(device), prompts

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step on ``batch_size`` pairs per micro-batch and process; returns the step's
        statistics over every process. None when a non-finite loss or gradient norm dropped the batch
        (``on_nonfinite="skip"``)."""
        acc, cfg, stats, dropped = self.accelerator, self.config, [], False
        self.model.train()
        for _ in range(cfg.run.gradient_accumulation_steps):
            with acc.accumulate(self.model):  # entered every time: it counts the micro-batches
                if dropped:
                    continue
                with acc.autocast():
                    loss, batch_stats = self.objective.loss(*self._pairs(), self.rng, denoiser=self.model)
                dropped = self.backward_and_step(loss)
            stats.append({"reward": batch_stats["reward_margin"], **batch_stats})
        return None if dropped else self.record_step(stats, self.grad_norm, self.lr_scheduler.get_last_lr()[0])

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
        return score_images(self.reward, images, list(prompts), batch_size=self.config.run.batch_size)[0].float().cpu()


def train_dpo(pipe: Any, pairs: Any, config: DPOConfig | None = None, *, reward: Rewards | None = None,
              monitor: Rewards | HackingMonitor | None = None, **deprecated: Any) -> list[dict[str, float]]:
    """``DPOTrainer(pipe, pairs, config, reward=reward, monitor=monitor)`` trained in this process; returns its
    records, one per step (loss, implicit accuracy and reward margin, error gaps, gradient norm). ``monitor``
    as for :class:`DPOTrainer`: when it stops the run, the LoRA weights it preferred are put back.
    ``progress=`` (deprecated) is ``config.run.progress_bar``."""
    config = config or DPOConfig()
    if "progress" in deprecated:
        warnings.warn("train_dpo(progress=...) is config.run.progress_bar now: pass DPOConfig(run=RunConfig("
                      "progress_bar=...))", DeprecationWarning, stacklevel=2)
        config = dataclasses.replace(config, run=dataclasses.replace(config.run,
                                                                     progress_bar=deprecated.pop("progress")))
    if deprecated:
        raise TypeError(f"train_dpo() got unexpected keyword argument(s) {sorted(deprecated)}")
    return DPOTrainer(pipe, pairs, config, reward=reward, monitor=monitor).train().history
