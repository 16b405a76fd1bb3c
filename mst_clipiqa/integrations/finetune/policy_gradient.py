"""Online RL of a diffusers pipeline's denoiser with LoRA: DDPO, (Flow-)GRPO and DiffusionNFT, any reward.

Each step samples ``prompts_per_step x group_size`` rollouts over all processes (a prompt's group may
span them), scores them with any reward form, computes advantages over every process and updates the
LoRA (``finetune.policy.PolicyOptimizer``); the run itself (processes, run folder, checkpoints and
resumption, trackers, the step loop) is the base class's (``finetune.base.DiffusionTrainer``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..pipelines.lora import adapters_disabled, named_lora_parameters
from ..rewards import Rewards
from .config import require
from .policy import PolicyOptimizer
from .policy_config import PolicyFinetuneConfig
from .prompt_sources import Prompts
from .prompted import PromptedTrainer

if TYPE_CHECKING:
    from .monitor import HackingMonitor

__all__ = ["PolicyFinetuneConfig", "PolicyTrainer"]


class PolicyTrainer(PromptedTrainer):
    """Fine-tune ``pipe``'s denoiser with LoRA by DDPO, GRPO or DiffusionNFT (``config.method``) to raise
    ``reward``, which needs no gradient: any form :mod:`integrations.rewards` accepts (numpy functions,
    trl's ``(images, prompts, metadata)``, ``no_grad`` scorers, a dict of them weighted by ``reward_weights``).

    ``prompts``: a list, a ``pathlib.Path`` to a text file, or a ``prompt_fn`` (see ``PromptSource``); every
    process takes the main process's draw, so the groups are the same everywhere. One step is one round of
    rollouts and its ``inner_epochs`` passes of updates; the learning-rate schedule and the EMA advance once
    per step. Checkpoints hold the LoRA, AdamW, the EMA and DDPO's per-prompt statistics and resume bit for
    bit. The pipeline is modified in place (its scheduler is not: rollouts use the policy's own).
    """

    config_class = PolicyFinetuneConfig
    config: PolicyFinetuneConfig

    def __init__(self, pipe: Any, reward: Rewards, prompts: Prompts, config: PolicyFinetuneConfig | None = None,
                 accelerator: Any | None = None, *, monitor: Rewards | HackingMonitor | None = None):
        super().__init__(pipe, reward, prompts, config, accelerator)
        config = self.config
        self.name = config.method
        require(config.rollouts_per_step % self.num_processes == 0,
                f"prompts_per_step x group_size = {config.rollouts_per_step} rollouts per step must divide evenly "
                f"over {self.num_processes} processes")
        self.setup_lora(pipe, self.family, reward.values() if isinstance(reward, Mapping) else [reward])
        self.monitor = self.hacking_monitor(monitor, reward, config.reward_weights)
        run = config.run
        self.sampler = config.sampler(pipe, height=run.height, width=run.width, negative_prompt=run.negative_prompt,
                                      encode_kwargs=run.encode_kwargs)
        self.sampler.encoder = self.prompt_source.cache(self.family, run, guidance=self.family.uses_cfg(
            self.sampler.guidance_scale), **run.encode_kwargs)
        acc = self.accelerator
        self.policy = PolicyOptimizer(self.sampler, self.model, self.optimizer, self.params, reward, config,
                                      reference=lambda: adapters_disabled(self.unwrapped), backward=acc.backward,
                                      clip_grad_norm=acc.clip_grad_norm_, max_grad_norm=config.run.max_grad_norm,
                                      on_nonfinite=config.run.on_nonfinite)
        self.start_run()

    def trained_parameters(self) -> dict[str, torch.Tensor]:
        return named_lora_parameters(self.unwrapped)

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"policy": self.policy.state_dict()}

    def load_extra_state(self, tensors: Any, meta: Any) -> None:
        self.policy.load_state_dict(meta.get("policy", {}))

    def stop_early(self) -> bool:
        """True once the sigma watch's patience (``sigma_patience``) ran out: a checkpoint first, then one line
        naming what rose and by how much."""
        watch = self.policy.watch
        if watch is None or not watch.should_stop:
            return False
        if self.run_dir is not None and self.saved_step != self.global_step:
            self.save_checkpoint()
        kept = f"checkpoint written to {self.run_dir}" if self.run_dir is not None else "nothing saved (no output_dir)"
        self.accelerator.print(f"stopped at step {self.global_step}: {watch.reason}, on {watch.in_row} updates in a "
                               f"row (sigma_patience {watch.patience}); {kept}")
        return True

    # --- one step ---------------------------------------------------------------------------------------

    def rollout_batch(self) -> tuple[list[str], list[int], torch.Tensor]:
        """This process's share of the step's rollouts: prompts, seeds and group keys (a prompt's index in
        the step, the same on every process). The seeds come from the step number, so every process and a
        resumed run draw the same; the prompts are the main process's."""
        cfg, acc = self.config, self.accelerator
        shared = self.shared_generator()
        chosen = self.prompt_source.draw(cfg.prompts_per_step, self.rng)
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            chosen = broadcast_object_list([chosen])[0]
        prompts = [p for p in chosen for _ in range(cfg.group_size)]
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),), generator=shared).tolist()
        groups = torch.arange(cfg.prompts_per_step).repeat_interleave(cfg.group_size)
        rank, world = acc.process_index, acc.num_processes
        return prompts[rank::world], seeds[rank::world], groups[rank::world].to(acc.device)

    def train_step(self) -> dict[str, float] | None:
        """One round of rollouts and updates; returns its statistics: reward mean / std (per named output
        too), advantage stats, and per method importance-ratio stats, clip fraction, approximate KL, KL and
        loss (ddpo, grpo) or the NFT loss and optimality probability (nft), gradient norm, learning rate.
        None when every group was skipped for non-finite rewards (``on_nonfinite="skip"``): no update."""
        acc = self.accelerator
        prompts, seeds, groups = self.rollout_batch()
        lr = self.lr_scheduler.get_last_lr()[0]
        with acc.autocast():
            batch = self.policy.collect(prompts, seeds, groups)
            if "advantage_mean" not in batch.advantages.stats and self.drop_batch(reward=batch.rewards):
                return None  # no group had finite rewards: skipped and counted like any dropped batch
            stats = self.policy.update(batch, self.rng)
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step()
        self.global_step += 1
        record = {"step": self.global_step, "reward": stats["reward_mean"], **stats, "lr": lr}
        self.log.append(record)
        acc.log({k: v for k, v in record.items() if k != "step"}, step=self.global_step)
        return record

    # --- evaluation and saving --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int | None = None) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] from the current policy (its EMA when on): the rollout sampler, whose
        seed fixes every step's noise, so the same (prompt, seed) pairs compare across steps."""
        prompts, seeds = list(prompts), list(seeds)
        require(len(prompts) == len(seeds), f"got {len(prompts)} prompts for {len(seeds)} seeds")
        size = batch_size or self.config.group_size
        model = self.unwrapped.eval()  # not the DDP wrapper: this may run on the main process alone
        out = []
        with self.evaluation_weights(), self.accelerator.autocast():
            for i in range(0, len(prompts), size):
                out.append(self.sampler.rollout(model, prompts[i: i + size], seeds[i: i + size]).images.float())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Per-image objective on fixed prompts and seeds (e.g. held-out seeds), on the CPU."""
        images = self.sample(prompts, seeds)
        return self.policy.score(images, list(prompts))[0].float().cpu()
