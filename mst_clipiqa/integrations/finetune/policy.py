"""One policy update per batch of rollouts, for DDPO, GRPO and DiffusionNFT: the part a trainer drives.

:class:`PolicyOptimizer` holds no run plumbing: the caller owns the denoiser (with its LoRA, possibly
wrapped for several processes), the optimizer, the prompts and seeds, checkpoints and logging. Each
:meth:`PolicyOptimizer.step` samples, scores, computes advantages over every process and updates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..pipelines.lora import adapters_disabled
from ..pipelines.sampling import guided_prediction
from ..pipelines.stochastic import Rollout, StepOutput, StochasticSampler
from ..rewards import Rewards, named_rewards, objective
from .advantages import (
    Advantages,
    PromptStatTracker,
    QuantileMixer,
    decoupled_advantages,
    gather_rows,
    group_advantages,
    shrink_by_uncertainty,
)
from .objectives import (
    clipped_policy_loss,
    forward_noised,
    gaussian_kl,
    nft_loss,
    optimality_probability,
    ratio_stats,
)
from .policy_config import METHODS, PolicyConfig
from .uncertainty import SigmaTap, SigmaWatch, kl_weights

__all__ = ["METHODS", "PolicyConfig", "PolicyBatch", "PolicyOptimizer"]
@dataclass
class PolicyBatch:
    """Rollouts with their rewards (B,), named reward outputs, advantages and (with ``uncertainty``) sigma."""

    rollout: Rollout
    rewards: torch.Tensor
    named: dict[str, torch.Tensor]
    advantages: Advantages
    sigma: torch.Tensor | None = None


class PolicyOptimizer:
    """DDPO / GRPO / DiffusionNFT updates of ``model`` (the denoiser with its LoRA; the same module or its
    DDP wrapper) by ``optimizer`` over ``params``.

    ``reference()``: a context in which ``model`` is the reference policy (default: its LoRA disabled),
    for the KL term. ``max_grad_norm``: clip the gradient norm to this (0 or None: no clipping).
    ``on_nonfinite``: ``"raise"`` on NaN / infinite rewards or ``"skip"`` their groups.
    ``backward(loss)``: how to backpropagate (default ``loss.backward()``; a trainer
    passes ``accelerator.backward``). ``clip_grad_norm(params, max_norm)``: likewise.
    """

    def __init__(self, sampler: StochasticSampler, model: nn.Module, optimizer: torch.optim.Optimizer,
                 params: Sequence[nn.Parameter], reward: Rewards, config: PolicyConfig, *,
                 reference: Callable[[], AbstractContextManager] | None = None,
                 backward: Callable[[torch.Tensor], None] | None = None,
                 clip_grad_norm: Callable[..., Any] | None = None, max_grad_norm: float | None = 1.0,
                 on_nonfinite: str = "raise"):
        self.sampler, self.model, self.optimizer = sampler, model, optimizer
        self.max_grad_norm, self.on_nonfinite = max_grad_norm, on_nonfinite
        self.params, self.reward, self.config = list(params), reward, config
        if config.method == "nft" and sampler.kind != "flow":
            raise ValueError(f"method 'nft' (DiffusionNFT) trains flow-matching models (SD3, FLUX.1); this pipeline "
                             f"samples with {sampler.kind}: use 'ddpo' or 'grpo'")
        base = getattr(model, "module", model)
        self.reference = reference or (lambda: adapters_disabled(base))
        self.backward = backward or (lambda loss: loss.backward())
        self.clip_grad_norm = clip_grad_norm or torch.nn.utils.clip_grad_norm_
        self.tracker = (PromptStatTracker(config.stat_buffer_size, config.stat_min_count)
                        if config.method == "ddpo" and config.per_prompt_stats else None)
        watched = config.uncertainty != "none" or config.sigma_patience is not None
        self.tap = SigmaTap(reward) if watched else None  # sigma from the scoring pass itself
        self.watch = SigmaWatch(patience=config.sigma_patience) if watched else None
        self.mixer = QuantileMixer() if config.reward_aggregation == "quantile" else None
        self.scorer = ThreadPoolExecutor(1, thread_name_prefix="policy-reward") if config.async_scoring else None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the LoRA and optimizer: DDPO's per-prompt statistics."""
        return {"tracker": self.tracker.state_dict() if self.tracker is not None else None,
                **({"sigma_watch": self.watch.state_dict()} if self.watch is not None else {}),
                **({"quantiles": self.mixer.state_dict()} if self.mixer is not None else {})}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])
        if self.watch is not None and state.get("sigma_watch") is not None:
            self.watch.load_state_dict(state["sigma_watch"])
        if self.mixer is not None and state.get("quantiles") is not None:
            self.mixer.load_state_dict(state["quantiles"])

    # --- rollouts, rewards, advantages -----------------------------------------------------------------

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective (B,) and every named output, any reward form, no gradients."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            named = named_rewards(self.tap.reward if self.tap else self.reward, images.float(), list(prompts))
        return objective(named, self.config.reward_weights).float(), named

    def collect(self, prompts: Sequence[str], seeds: Sequence[int], groups: torch.Tensor) -> PolicyBatch:
        """Sample one trajectory per (prompt, seed), score it and compute advantages over every process.
        ``groups``: (B,) integer key per sample, the same on every process for one prompt's samples."""
        cfg = self.config
        with self.tap.recording() if self.tap else nullcontext([]) as sigmas:
            rollout, rewards, named = self.sample_and_score(list(prompts), list(seeds))
        rewards = rewards.to(rollout.final.device)
        advantages = self._advantages(rollout.prompts, rewards, named, groups)
        sigma = None
        if self.tap is not None:
            sigma = torch.cat(sigmas).to(rewards.device)
            every_reward, every_sigma = gather_rows(rewards.float())[0], gather_rows(sigma)[0]  # one watch everywhere
            rising = self.watch.update(float(every_reward[torch.isfinite(every_reward)].mean()),
                                       float(every_sigma.mean()))
            advantages.stats.update(sigma_mean=float(every_sigma.mean()), sigma_rising=float(rising))
            if cfg.uncertainty == "shrink":
                advantages = shrink_by_uncertainty(advantages, sigma, cfg.uncertainty_scale)
        return PolicyBatch(rollout, rewards, named, advantages, sigma)

    def _advantages(self, prompts: Sequence[str], rewards: torch.Tensor, named: Mapping[str, torch.Tensor],
                    groups: torch.Tensor) -> Advantages:
        """Per the method and ``reward_aggregation``: of the objective, of each reward (gdpo), or of the rewards'
        running quantiles (quantile; the log still shows the objective's mean)."""
        cfg = self.config
        signal = self.mixer(named, cfg.reward_weights).to(rewards.device) if self.mixer is not None else rewards
        if self.tracker is not None:
            advantages = self.tracker.update(prompts, signal, nonfinite=self.on_nonfinite)
        else:
            keys = torch.zeros_like(torch.as_tensor(groups)) if cfg.method == "ddpo" else groups
            keys = torch.as_tensor(keys).to(rewards.device)
            if cfg.reward_aggregation == "gdpo":
                return decoupled_advantages(named, keys, cfg.reward_weights, nonfinite=self.on_nonfinite)
            advantages = group_advantages(signal, keys, nonfinite=self.on_nonfinite)
        if self.mixer is not None:
            every, _ = gather_rows(rewards.detach().float())
            advantages.stats.update(quantile_mean=advantages.stats["reward_mean"],
                                    reward_mean=float(every[torch.isfinite(every)].mean()))
        return advantages

    def sample_and_score(self, prompts: list[str], seeds: list[int]
                         ) -> tuple[Rollout, torch.Tensor, dict[str, torch.Tensor]]:
        """The rollouts, ``rollout_chunk`` per sampler call, and their scores; with ``async_scoring`` chunk k is
        scored on the scoring thread while chunk k + 1 is sampled (results in order, the same as without)."""
        cfg = self.config
        self.model.eval()
        stochastic = cfg.method != "nft" or cfg.nft_stochastic_rollouts
        size = cfg.rollout_chunk or len(prompts)
        parts, scores = [], []
        for start in range(0, len(prompts), size):
            part = self.sampler.rollout(self.model, prompts[start:start + size], seeds[start:start + size],
                                        stochastic=stochastic)
            parts.append(part)
            score = self.scorer.submit(self.score, part.images, part.prompts) if self.scorer else None
            scores.append(score or self.score(part.images, part.prompts))
        scores = [s.result() if isinstance(s, Future) else s for s in scores]
        named = {name: torch.cat([n[name] for _, n in scores]) for name in scores[0][1]}
        return _concat(parts), torch.cat([r for r, _ in scores]), named

    # --- updates -----------------------------------------------------------------------------------------

    def _minibatches(self, size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
        order = torch.randperm(size, generator=generator) if generator is not None else torch.arange(size)
        chunk = self.config.minibatch_size or size
        return list(order.split(chunk))

    def _optimizer_step(self) -> float:
        norm = self.clip_grad_norm(self.params, self.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def update(self, batch: PolicyBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        """``inner_epochs`` passes over the batch in minibatches (one optimizer step each); returns the
        update's statistics: reward and advantage stats, and per method ratio / clip / KL or NFT stats."""
        self.model.train()
        update = self._nft_update if self.config.method == "nft" else self._ppo_update
        stats = update(batch, generator)
        self.model.eval()
        named = {f"reward/{k}": float(v[torch.isfinite(v)].mean()) for k, v in batch.named.items()
                 if len(batch.named) > 1}
        return {**batch.advantages.stats, **named, **stats}

    def step(self, prompts: Sequence[str], seeds: Sequence[int], groups: torch.Tensor,
             generator: torch.Generator | None = None) -> dict[str, float]:
        """:meth:`collect`, then :meth:`update`."""
        return self.update(self.collect(prompts, seeds, groups), generator)

    def _ppo_update(self, batch: PolicyBatch, generator: torch.Generator | None) -> dict[str, float]:
        cfg, rollout = self.config, batch.rollout
        steps = len(rollout.steps)
        totals: dict[str, list[float]] = {}
        for _ in range(cfg.inner_epochs):
            for index in self._minibatches(len(rollout), generator):
                part = rollout.select(index)
                advantages = batch.advantages.values[index.to(batch.advantages.values.device)]
                mask = batch.advantages.valid[index.to(batch.advantages.valid.device)]
                weight = mask * kl_weights(batch.sigma, index) if cfg.uncertainty == "kl" else mask
                for ks in _chunks(range(steps), cfg.steps_per_call or steps):
                    outs = self.sampler.step_outputs(self.model, part, ks)
                    refs = self._reference_outputs(part, ks) if cfg.kl_coeff > 0 else [None] * len(ks)
                    loss = sum(self._step_loss(out, ref, part.log_probs[:, k], advantages, mask, weight, totals)
                               for k, out, ref in zip(ks, outs, refs))
                    self.backward(loss / steps)
                _accumulate(totals, {"grad_norm": self._optimizer_step()})
        return _means(totals)

    @torch.no_grad()
    def _reference_outputs(self, part: Rollout, ks: list[int]) -> list[StepOutput]:
        with self.reference():
            return self.sampler.step_outputs(self.model, part, ks)

    def _step_loss(self, out: StepOutput, ref: StepOutput | None, old: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor, weight: torch.Tensor, totals: dict[str, list[float]]) -> torch.Tensor:
        """One recorded step's clipped policy loss, plus its KL to the reference ``ref`` (None: no KL term);
        its statistics go into ``totals``."""
        cfg = self.config
        loss = clipped_policy_loss(out.log_prob, old, advantages, clip_range=cfg.clip_range,
                                   adv_clip_max=cfg.adv_clip_max, mask=mask)
        stats = ratio_stats(out.log_prob[mask], old[mask], cfg.clip_range) if bool(mask.any()) else {}
        if ref is not None:
            kl = (gaussian_kl(out.mean, ref.mean, out.std) * weight).sum() / mask.sum().clamp(min=1)
            loss = loss + cfg.kl_coeff * kl
            stats["kl"] = float(kl.detach())
        stats["loss"] = float(loss.detach())
        _accumulate(totals, stats)
        return loss

    def _nft_update(self, batch: PolicyBatch, generator: torch.Generator | None) -> dict[str, float]:
        cfg, rollout, sampler = self.config, batch.rollout, self.sampler
        r = optimality_probability(batch.advantages.values, cfg.adv_clip_max)
        scale = 1.0 if sampler.family.uses_cfg(sampler.guidance_scale) else sampler.guidance_scale
        x0 = rollout.final.float()
        times = sampler.scheduler.sigmas[: sampler.num_steps].float()
        draws = []  # (t, noise, v_old) per draw: the old policy is the model before this batch's updates
        with torch.no_grad():
            cond = sampler.conditioning(rollout.embeds, scale)
            for _ in range(cfg.nft_timesteps):
                t = times[torch.randint(len(times), (len(rollout),), generator=generator)].to(x0.device)
                noise = torch.randn(x0.shape, generator=generator).to(x0)
                v_old = self._velocity(forward_noised(x0, noise, t), t, cond, scale).float()
                draws.append((t, noise, v_old))
        totals: dict[str, list[float]] = {}
        for _ in range(cfg.inner_epochs):
            for index in self._minibatches(len(rollout), generator):
                part = rollout.select(index)
                cond = sampler.conditioning(part.embeds, scale)
                device_index = index.to(x0.device)
                mask = batch.advantages.valid[device_index]
                for t, noise, v_old in draws:
                    t_i, noise_i = t[device_index], noise[device_index]
                    x_t = forward_noised(x0[device_index], noise_i, t_i)
                    v_theta = self._velocity(x_t, t_i, cond, scale)
                    loss = nft_loss(v_theta, v_old[device_index], x0[device_index], noise_i, r[device_index],
                                    cfg.nft_beta, mask=mask)
                    self.backward(loss / len(draws))
                    _accumulate(totals, {"nft_loss": float(loss.detach())})
                _accumulate(totals, {"grad_norm": self._optimizer_step()})
        return {**_means(totals), "optimality_mean": float(r[batch.advantages.valid].mean())}

    def _velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, Any], scale: float) -> torch.Tensor:
        timestep = t * self.sampler.scheduler.config.num_train_timesteps  # diffusers' flow timesteps
        return guided_prediction(self.sampler.family, self.model, x_t.to(self.sampler.pipe.dtype), timestep, cond,
                                 scale)


def _concat(parts: list[Rollout]) -> Rollout:
    """Rollouts sampled in chunks as one (their steps and timesteps are the same)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in parts])

    return replace(first, prompts=[x for p in parts for x in p.prompts], seeds=[x for p in parts for x in p.seeds],
                   embeds={k: torch.cat([p.embeds[k] for p in parts]) for k in first.embeds},
                   latents=cat("latents"), next_latents=cat("next_latents"), log_probs=cat("log_probs"),
                   final=cat("final"), images=None if first.images is None else cat("images"))


def _chunks(items: range, size: int) -> list[list[int]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def _accumulate(totals: dict[str, list[float]], stats: Mapping[str, float]) -> None:
    for key, value in stats.items():
        totals.setdefault(key, []).append(value)


def _means(totals: Mapping[str, list[float]]) -> dict[str, float]:
    return {key: sum(values) / len(values) for key, values in totals.items()}
