"""The reward's uncertainty in online RL (after GARDO, arXiv 2512.24138): which reward reports it, each
rollout's sigma, and per-sample KL weights."""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from mst_clipiqa.reward import MSTCLIPIQAReward

from ..rewards import NamedScores, Rewards, map_reward


def uncertainty_reward(reward: Rewards) -> MSTCLIPIQAReward:
    """The reward whose sigma the options use: the reward itself (or the one ``NamedScores`` wraps), or the first
    such reward of a mapping."""
    judge = map_reward(reward)
    if judge is None:
        raise ValueError("uncertainty and sigma_patience need a reward that reports how sure it is: an "
                         "MSTCLIPIQAReward, alone or in the mapping of rewards; got none (leave both unset)")
    return judge


class SigmaTap:
    """``reward`` with its MSTCLIPIQAReward (``judge``) scoring through ``return_uncertainty``: one encoder pass
    gives the scores (exactly what the judge returns alone) and their sigma. ``tap.reward`` takes the reward's
    place; inside ``with tap.recording() as sigmas:`` each call's (B,) sigma is appended to ``sigmas``, and its
    (B, D) coarse image embeddings to ``tap.embeddings`` (the last recording's, kept after it ends)."""

    def __init__(self, reward: Rewards):
        self.judge = uncertainty_reward(reward)
        self._sigmas: list[torch.Tensor] | None = None
        self.embeddings: list[torch.Tensor] = []
        if isinstance(reward, Mapping):
            found = next(k for k, v in reward.items() if self._is_judge(v))
            self.reward: Rewards = {k: (self._named(v) if k == found else v) for k, v in reward.items()}
        else:
            self.reward = self._named(reward)

    def _is_judge(self, candidate: object) -> bool:
        return (candidate.reward if isinstance(candidate, NamedScores) else candidate) is self.judge

    def _named(self, candidate: object) -> _Scored:
        return _Scored(self, every_output=isinstance(candidate, NamedScores))

    @contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        sigmas: list[torch.Tensor] = []
        self._sigmas, self.embeddings = sigmas, []
        try:
            yield sigmas
        finally:
            self._sigmas = None

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None, every_output: bool
                 ) -> torch.Tensor | dict[str, torch.Tensor]:
        result = self.judge(images, prompts, return_uncertainty=True)
        if self._sigmas is not None:
            self._sigmas.append(result.sigma.detach().float())
            self.embeddings.append(result.embeddings.detach())
        return result.outputs if every_output else result.scores


class _Scored:
    """The judge's place in the reward: what it returned there (its score, or under ``NamedScores`` every output
    by name), from the tap's one pass."""

    lower_better = False

    def __init__(self, tap: SigmaTap, every_output: bool):
        self.tap, self.every_output = tap, every_output
        self.input_range = tap.judge.input_range

    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None
                 ) -> torch.Tensor | dict[str, torch.Tensor]:
        return self.tap(images, prompts, self.every_output)


def kl_weights(sigma: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The minibatch ``index``'s KL weights: sigma over the whole batch's mean sigma (1 on average)."""
    weights = sigma / sigma.mean().clamp_min(torch.finfo(sigma.dtype).tiny)
    return weights[index.to(weights.device)]


class SigmaWatch:
    """Watches the rollouts' mean sigma rising while their mean reward rises: the policy leaving the data the
    reward was trained on (the signature of reward hacking). Over the last ``window`` updates, the later half's
    mean is compared with the earlier half's: reward higher, and sigma higher by more than ``rise`` (a
    fraction). Each time it shows, a warning; with ``patience``, ``should_stop`` turns true once it has shown
    for ``patience`` updates in a row (``reason`` says what rose, and by how much). Its history travels in
    checkpoints (``state_dict``), so a resumed run warns and stops where a straight one does."""

    def __init__(self, window: int = 6, rise: float = 0.1, patience: int | None = None):
        if window < 2 or not rise >= 0:
            raise ValueError(f"window must be >= 2 and rise >= 0, got {window}, {rise}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 or None (never stop), got {patience}")
        self.window, self.rise, self.patience = window, rise, patience
        self.history: list[tuple[float, float]] = []
        self.in_row = 0  # consecutive updates on which the signature showed
        self.reason = ""  # the last rise, in words

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.in_row >= self.patience

    def update(self, reward_mean: float, sigma_mean: float) -> bool:
        """Record one update's means; True (and a warning, unless it now stops) when the signature shows."""
        self.history = [*self.history, (float(reward_mean), float(sigma_mean))][-self.window:]
        if len(self.history) < self.window:
            return False
        half = self.window // 2
        (reward_before, sigma_before), (reward_now, sigma_now) = (
            [sum(row[j] for row in rows) / len(rows) for j in (0, 1)]
            for rows in (self.history[:half], self.history[-half:]))
        rising = reward_now > reward_before and sigma_now > (1 + self.rise) * sigma_before
        self.in_row = self.in_row + 1 if rising else 0
        if rising:
            change = f"{100 * (sigma_now / sigma_before - 1):+.0f}%" if sigma_before > 0 else "from 0"
            self.reason = (f"the rollouts' uncertainty (sigma) rose from {sigma_before:.4g} to {sigma_now:.4g} "
                           f"({change}) while their reward rose from {reward_before:.4g} to {reward_now:.4g} over "
                           f"the last {self.window} updates")
            if not self.should_stop:
                warnings.warn(f"{self.reason}: the policy may be leaving the reward's data (reward hacking); "
                              "check the samples, or raise kl_coeff", RuntimeWarning, stacklevel=3)
        return rising

    def state_dict(self) -> dict[str, object]:
        return {"history": [list(row) for row in self.history], "in_row": self.in_row, "reason": self.reason}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.history = [(float(r), float(s)) for r, s in state.get("history", [])]
        self.in_row, self.reason = int(state.get("in_row", 0)), str(state.get("reason", ""))
