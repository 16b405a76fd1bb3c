"""Advantages from rewards, computed over every process: a prompt's group of samples may span several; and the
calibrated mixing of several rewards (:class:`QuantileMixer`) before them.

GRPO normalises each reward within its group (the G samples of one prompt); DDPO's option keeps
running statistics per prompt over recent epochs. Under ``torch.distributed`` (``torchrun``,
``accelerate launch``) the rewards and group keys of all processes are gathered first, every process
computes the same advantages, and each keeps its own rows.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Advantages", "decoupled_advantages", "group_advantages", "PromptStatTracker", "gather_rows",
           "gather_objects", "shrink_by_uncertainty", "QuantileMixer"]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_rows(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``values`` concatenated in rank order (processes may hold different
    numbers of rows), and the offset of this process's rows. Without ``torch.distributed``: (values, 0)."""
    if not _distributed():
        return values, 0
    dist = torch.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([values.shape[0]], device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = values.new_zeros(max(counts), *values.shape[1:])
    padded[: values.shape[0]] = values
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, counts)]), sum(counts[:rank])


def gather_objects(items: Sequence) -> list:
    """Every process's ``items`` (picklable) concatenated in rank order."""
    if not _distributed():
        return list(items)
    out: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, list(items))
    return [x for part in out for x in part]


@dataclass
class Advantages:
    """This process's advantages (B,), which of its samples count (``valid``: False for a skipped
    group), and statistics over every process's samples."""

    values: torch.Tensor
    valid: torch.Tensor
    stats: dict[str, float]


def _finite_groups(rewards: torch.Tensor, groups: torch.Tensor, nonfinite: str) -> torch.Tensor:
    """Which samples belong to a group whose rewards are all finite; raise or warn otherwise."""
    bad = ~torch.isfinite(rewards)
    if not bool(bad.any()):
        return torch.ones_like(bad)
    count = int(bad.sum())
    if nonfinite == "raise":
        raise ValueError(f"{count} of {len(rewards)} rewards are NaN or infinite; a policy update needs finite "
                         "rewards. Fix the reward, or pass nonfinite='skip' to drop the groups that hold them")
    if nonfinite != "skip":
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
    bad_groups = torch.unique(groups[bad])
    valid = ~torch.isin(groups, bad_groups)
    warnings.warn(f"{count} of {len(rewards)} rewards are NaN or infinite: skipping {len(bad_groups)} group(s), "
                  f"{int((~valid).sum())} samples, in this update", RuntimeWarning, stacklevel=3)
    return valid


def _stats(rewards: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    r, a = rewards[valid].double(), advantages[valid].double()
    if not len(r):
        return {"reward_mean": float("nan"), "reward_std": float("nan"), "skipped": float((~valid).sum())}
    return {"reward_mean": float(r.mean()), "reward_std": float(r.std(unbiased=False)),
            "advantage_mean": float(a.mean()), "advantage_std": float(a.std(unbiased=False)),
            "advantage_abs_max": float(a.abs().max()), "skipped": float((~valid).sum())}


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, *, eps: float = 1e-4,
                     nonfinite: str = "raise") -> Advantages:
    """GRPO advantages ``(r - mean_group) / (std_group + eps)`` over every process's samples.

    ``groups``: (B,) integer key per sample, the same for the samples of one prompt on every process
    (e.g. the prompt's index in a batch all processes draw alike). Standard deviations are the
    population's (Flow-GRPO). A group of one sample gets advantage 0. ``nonfinite``: ``"raise"``
    on a NaN / infinite reward, or ``"skip"`` the groups holding one (a warning says how many).
    """
    rewards, groups = rewards.detach().float().flatten(), torch.as_tensor(groups, device=rewards.device).flatten()
    if groups.shape != rewards.shape:
        raise ValueError(f"groups must hold one key per reward ({rewards.shape[0]}), got shape "
                         f"{tuple(groups.shape)}")
    all_rewards, offset = gather_rows(rewards)
    all_groups, _ = gather_rows(groups.long())
    valid = _finite_groups(all_rewards, all_groups, nonfinite)
    keys, index = torch.unique(all_groups, return_inverse=True)
    clean = torch.where(valid, all_rewards, torch.zeros_like(all_rewards)).double()
    count = torch.zeros(len(keys), dtype=torch.float64, device=rewards.device).index_add_(0, index, valid.double())
    total = torch.zeros_like(count).index_add_(0, index, clean)
    mean = total / count.clamp(min=1)
    square = torch.zeros_like(count).index_add_(0, index, (clean - mean[index]).pow(2) * valid)
    std = (square / count.clamp(min=1)).sqrt()
    advantages = torch.where(valid, (clean - mean[index]) / (std[index] + eps), torch.zeros_like(clean)).float()
    rows = slice(offset, offset + len(rewards))
    return Advantages(advantages[rows], valid[rows], _stats(all_rewards, advantages, valid))


def decoupled_advantages(named: Mapping[str, torch.Tensor], groups: torch.Tensor,
                         weights: Mapping[str, float] | None = None, *, eps: float = 1e-4,
                         nonfinite: str = "raise") -> Advantages:
    """GDPO (arXiv 2601.05242): each named reward normalised within its group first, then the weighted sum
    ``sum_k w_k (r_k - mean_group) / (std_group + eps)``, so a reward with a wide spread cannot drown another
    (a plain sum normalises only the total). One reward of weight 1: exactly :func:`group_advantages`.
    Statistics: the combined advantages', and each reward's ``reward_mean/NAME``."""
    weights = {name: 1.0 for name in named} if weights is None else dict(weights)
    unknown = sorted(set(weights) - set(named))
    if unknown:
        raise ValueError(f"reward weights name {unknown}, but the rewards are {sorted(named)}")
    parts = {name: group_advantages(named[name], groups, eps=eps, nonfinite=nonfinite) for name in weights}
    values = sum(w * parts[name].values for name, w in weights.items())
    valid = torch.stack([part.valid for part in parts.values()]).all(0)
    values = torch.where(valid, values, torch.zeros_like(values))
    total = sum(w * named[name].detach().float().flatten() for name, w in weights.items())
    all_total, _ = gather_rows(total)
    all_values, _ = gather_rows(values)
    all_valid, _ = gather_rows(valid)
    stats = _stats(all_total, all_values, all_valid)
    stats.update({f"reward_mean/{name}": part.stats["reward_mean"] for name, part in parts.items()})
    return Advantages(values, valid, stats)


def shrink_by_uncertainty(advantages: Advantages, sigma: torch.Tensor, scale: float) -> Advantages:
    """Advantages of uncertain samples shrunk, ``A / (1 + sigma / scale)`` (GARDO, arXiv 2512.24138, acts on the
    samples the reward is unsure of): a sample the reward cannot judge pushes the policy less. ``scale``: the
    sigma (in the reward's units) at which an advantage is halved."""
    if not scale > 0:
        raise ValueError(f"uncertainty scale must be > 0, got {scale}")
    factor = 1.0 / (1.0 + sigma.detach().float().to(advantages.values.device) / scale)
    stats = {**advantages.stats, "sigma_mean": float(sigma.mean()), "shrink_mean": float(factor.mean())}
    return Advantages(advantages.values * factor, advantages.valid, stats)


class PromptStatTracker:
    """DDPO's per-prompt running statistics: each prompt's last ``buffer_size`` rewards normalise its
    new ones; until a prompt has ``min_count`` of them, the whole batch's mean and std do (the
    defaults, 16 and 16, are ddpo-pytorch's and trl's). Every process sees the same gathered rewards,
    so the buffers stay identical on all of them (save ``state_dict`` from any one)."""

    def __init__(self, buffer_size: int = 16, min_count: int = 16, eps: float = 1e-6):
        if buffer_size < 1 or min_count < 1:
            raise ValueError(f"buffer_size and min_count must be >= 1, got {buffer_size}, {min_count}")
        self.buffer_size, self.min_count, self.eps = buffer_size, min_count, eps
        self.buffers: dict[str, deque] = {}

    def update(self, prompts: Sequence[str], rewards: torch.Tensor, *, nonfinite: str = "raise") -> Advantages:
        """Advantages of this process's ``rewards`` (one per prompt), after adding every process's rewards."""
        rewards = rewards.detach().float().flatten()
        if len(prompts) != len(rewards):
            raise ValueError(f"got {len(prompts)} prompts for {len(rewards)} rewards; expected one prompt each")
        all_rewards, offset = gather_rows(rewards)
        all_prompts = gather_objects(prompts)
        names = sorted(set(all_prompts))
        groups = torch.tensor([names.index(p) for p in all_prompts], device=rewards.device)
        valid = _finite_groups(all_rewards, groups, nonfinite)
        values = all_rewards.double().cpu()
        batch = values[valid.cpu()]
        advantages = torch.zeros_like(values)
        for name in names:
            rows = [i for i, p in enumerate(all_prompts) if p == name and bool(valid[i])]
            if not rows:
                continue
            buffer = self.buffers.setdefault(name, deque(maxlen=self.buffer_size))
            buffer.extend(values[rows].tolist())
            ref = torch.tensor(list(buffer), dtype=torch.float64) if len(buffer) >= self.min_count else batch
            advantages[rows] = (values[rows] - ref.mean()) / (ref.std(unbiased=False) + self.eps)
        advantages = advantages.float().to(rewards.device)
        rows = slice(offset, offset + len(rewards))
        return Advantages(advantages[rows], valid[rows], _stats(all_rewards, advantages, valid))

    def state_dict(self) -> dict[str, list[float]]:
        return {name: list(buffer) for name, buffer in self.buffers.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.buffers = {name: deque(values, maxlen=self.buffer_size) for name, values in state.items()}


class QuantileMixer:
    """Each named reward becomes its quantile among that reward's last ``buffer_size`` values (every process's,
    this batch's included): ``(#{v < r} + #{v == r} / 2) / n`` in [0, 1]. Rewards on different scales then mix
    by rank, so a weight means the same for each, and one reward's outliers cannot swamp another. Every process
    sees the same gathered values, so the buffers stay identical (save ``state_dict`` from any one)."""

    def __init__(self, buffer_size: int = 512):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.buffer_size = buffer_size
        self.buffers: dict[str, deque] = {}

    def __call__(self, named: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """(B,) the weighted sum of each reward's quantile (every weight 1 when ``weights`` is None)."""
        weights = {name: 1.0 for name in named} if weights is None else dict(weights)
        unknown = sorted(set(weights) - set(named))
        if unknown:
            raise ValueError(f"reward weights name {unknown}, but the rewards are {sorted(named)}")
        return sum(w * self.quantiles(name, named[name]) for name, w in weights.items())

    def quantiles(self, name: str, rewards: torch.Tensor) -> torch.Tensor:
        values = rewards.detach().double().flatten()
        every, _ = gather_rows(values)
        buffer = self.buffers.setdefault(name, deque(maxlen=self.buffer_size))
        buffer.extend(v for v in every.tolist() if v == v)  # NaN stays out; its own quantile stays NaN
        reference = torch.tensor(list(buffer), dtype=torch.float64, device=values.device)
        below = (reference[None] < values[:, None]).sum(1)
        ties = (reference[None] == values[:, None]).sum(1)
        quantile = (below + ties / 2) / max(len(reference), 1)
        return torch.where(torch.isfinite(values), quantile, values).float().to(rewards.device)

    def state_dict(self) -> dict[str, list[float]]:
        return {name: list(buffer) for name, buffer in self.buffers.items()}

    def load_state_dict(self, state: Mapping[str, list[float]]) -> None:
        self.buffers = {name: deque(values, maxlen=self.buffer_size) for name, values in state.items()}
