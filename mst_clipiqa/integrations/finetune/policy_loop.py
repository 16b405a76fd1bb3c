"""A minimal single-process online RL loop: LoRA on the denoiser, AdamW, ``epochs`` policy updates.

No checkpoints, trackers or several processes: the fine-tuning trainers add those around
:class:`~integrations.finetune.policy.PolicyOptimizer`. Enough to try a method on a pipeline and a reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..pipelines.families import pipeline_family
from ..pipelines.lora import DEFAULT_TARGET_MODULES, add_lora, lora_parameters
from ..rewards import Rewards
from .policy import PolicyConfig, PolicyOptimizer

__all__ = ["PolicyRun", "group_batch", "train_policy"]


@dataclass
class PolicyRun:
    """What :func:`train_policy` returns: the optimizer core (its sampler and model sample from the
    trained policy) and one statistics record per epoch."""

    policy: PolicyOptimizer
    log: list[dict[str, float]] = field(default_factory=list)

    @torch.no_grad()
    def evaluate(self, prompts: Sequence[str], seeds: Sequence[int], *, stochastic: bool = True) -> torch.Tensor:
        """Per-sample objective (CPU) of the current policy on fixed prompts and seeds: the same seed draws
        the same noise, so two evaluations pair sample by sample."""
        policy = self.policy
        rollout = policy.sampler.rollout(policy.model, prompts, seeds, stochastic=stochastic)
        return policy.score(rollout.images, rollout.prompts)[0].cpu()


def group_batch(prompts: Sequence[str], prompts_per_epoch: int, group_size: int,
                generator: torch.Generator) -> tuple[list[str], list[int], torch.Tensor]:
    """``prompts_per_epoch`` prompts drawn with replacement, each repeated ``group_size`` times with its own
    seeds: (prompts, seeds, group keys)."""
    if not prompts:
        raise ValueError("prompts is empty; expected at least one training prompt")
    if prompts_per_epoch < 1 or group_size < 1:
        raise ValueError(f"prompts_per_epoch and group_size must be >= 1, got {prompts_per_epoch}, {group_size}")
    chosen = torch.randint(len(prompts), (prompts_per_epoch,), generator=generator).tolist()
    batch = [prompts[i] for i in chosen for _ in range(group_size)]
    seeds = torch.randint(0, 2**31 - 1, (len(batch),), generator=generator).tolist()
    return batch, seeds, torch.arange(prompts_per_epoch).repeat_interleave(group_size)


def train_policy(pipe: Any, reward: Rewards, prompts: Sequence[str], method: str = "grpo", *, epochs: int = 10,
                 prompts_per_epoch: int = 4, group_size: int = 8, learning_rate: float = 3e-4,
                 lora_rank: int = 4, lora_target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, seed: int = 0,
                 max_grad_norm: float | None = 1.0, on_nonfinite: str = "raise", config: PolicyConfig | None = None,
                 **settings: Any) -> PolicyRun:
    """Fine-tune ``pipe``'s denoiser with a LoRA by ``method`` (``"ddpo"``, ``"grpo"`` or ``"nft"``) for
    ``epochs`` rounds of ``prompts_per_epoch x group_size`` rollouts, in place.

    ``reward``: any form the reward boundary takes, differentiable or not (numpy, trl-style, ``no_grad``
    scorers, a dict of several with ``reward_weights``). ``max_grad_norm`` and ``on_nonfinite`` as for
    :class:`PolicyOptimizer`. ``settings``: :class:`PolicyConfig` fields
    (``num_inference_steps``, ``clip_range``, ``kl_coeff``, ``sde_window``, ...) overriding ``config``.
    """
    config = replace(config or PolicyConfig(), method=method, **settings)
    family = pipeline_family(pipe)
    denoiser = family.denoiser
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    add_lora(denoiser, lora_rank, target_modules=lora_target_modules, seed=seed)
    params = lora_parameters(denoiser)
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    policy = PolicyOptimizer(config.sampler(pipe), denoiser, optimizer, params, reward, config,
                             max_grad_norm=max_grad_norm, on_nonfinite=on_nonfinite)
    run = PolicyRun(policy)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        batch, seeds, groups = group_batch(prompts, prompts_per_epoch, group_size, generator)
        run.log.append({"epoch": epoch + 1, **policy.step(batch, seeds, groups, generator)})
    return run
