"""The one-call form of online RL, :func:`train_policy` (a :class:`PolicyTrainer` trained in this process), and
:func:`group_batch`, a step's rollouts drawn from one generator (for loops that drive ``PolicyOptimizer`` by hand).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from typing import TYPE_CHECKING, Any

import torch

from .policy_config import PolicyConfig, PolicyFinetuneConfig
from .policy_gradient import PolicyTrainer

if TYPE_CHECKING:
    from ..rewards import Rewards
    from .monitor import HackingMonitor
    from .prompt_sources import Prompts

__all__ = ["group_batch", "train_policy"]

# train_policy's keywords before it took a config, and the config field each one is now
_MOVED = {"epochs": "run.max_steps", "prompts_per_epoch": "prompts_per_step",
          **{name: f"run.{name}" for name in ("learning_rate", "lora_rank", "lora_target_modules", "seed",
                                                "max_grad_norm", "on_nonfinite")}}


def group_batch(prompts: Sequence[str], num_prompts: int, group_size: int,
                generator: torch.Generator) -> tuple[list[str], list[int], torch.Tensor]:
    """``num_prompts`` prompts drawn with replacement, each repeated ``group_size`` times with its own seeds:
    (prompts, seeds, group keys)."""
    if not prompts:
        raise ValueError("prompts is empty; expected at least one training prompt")
    if num_prompts < 1 or group_size < 1:
        raise ValueError(f"num_prompts and group_size must be >= 1, got {num_prompts}, {group_size}")
    chosen = torch.randint(len(prompts), (num_prompts,), generator=generator).tolist()
    batch = [prompts[i] for i in chosen for _ in range(group_size)]
    seeds = torch.randint(0, 2**31 - 1, (len(batch),), generator=generator).tolist()
    return batch, seeds, torch.arange(num_prompts).repeat_interleave(group_size)


def train_policy(pipe: Any, reward: Rewards, prompts: Prompts, config: PolicyFinetuneConfig | None = None, *,
                 monitor: Rewards | HackingMonitor | None = None, **deprecated: Any) -> PolicyTrainer:
    """``PolicyTrainer(pipe, reward, prompts, config, monitor=monitor)`` trained for ``config.run.max_steps``
    steps in this process; returns the trainer (its ``log``, ``policy`` and ``evaluate``).

    ``deprecated``: the keywords of the loop this used to be (``method``, ``epochs``, ``prompts_per_epoch``,
    ``learning_rate``, ..., :class:`PolicyConfig` fields), each taken into the config with a DeprecationWarning
    that names its field; the defaults are the config's."""
    trainer = PolicyTrainer(pipe, reward, prompts, _config_from_keywords(config, deprecated), monitor=monitor)
    trainer.train()
    return trainer


def _config_from_keywords(config: PolicyFinetuneConfig | PolicyConfig | str | None,
                          keywords: dict[str, Any]) -> PolicyFinetuneConfig:
    if isinstance(config, str):  # the method, once the fourth positional argument
        keywords, config = {"method": config, **keywords}, None
    elif isinstance(config, PolicyConfig) and not isinstance(config, PolicyFinetuneConfig):
        keywords, config = {**asdict(config), **keywords}, None
    if not keywords:
        return config or PolicyFinetuneConfig()
    paths = {name: _MOVED.get(name, name) for name in keywords}
    own = {f.name for f in fields(PolicyFinetuneConfig)} - {"run"}
    unknown = [name for name, path in paths.items() if not path.startswith("run.") and path not in own]
    if unknown:
        raise TypeError(f"train_policy() got unexpected keyword argument(s) {unknown}; expected "
                        "config=PolicyFinetuneConfig(...)")
    warnings.warn("train_policy's keywords are config fields now: pass config=PolicyFinetuneConfig(...) ("
                  + "; ".join(f"{name}= -> {path}=" for name, path in paths.items()) + ")", DeprecationWarning,
                  stacklevel=3)
    config = config or PolicyFinetuneConfig()
    run = {path[4:]: keywords[name] for name, path in paths.items() if path.startswith("run.")}
    own = {path: keywords[name] for name, path in paths.items() if not path.startswith("run.")}
    return replace(config, **own, run=replace(config.run, **run))

