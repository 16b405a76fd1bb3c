"""Rewards of other forms, adapted by name to the one form the adapters call: ``reward(images, prompts)``.

=====================  ===============================================================================
``from_trl(fn)``       trl / DDPO ``reward_fn(images, prompts, metadata) -> (rewards, metadata)``
``from_imscore(s)``    an imscore scorer (``PickScorer``, ``CLIPAestheticScorer``, ...): its ``.score``
``from_pyiqa(m)``      a pyiqa no-reference metric (``pyiqa.create_metric(...)``)
=====================  ===============================================================================

A plain ``reward(images, prompts)`` or ``reward(images)`` callable or ``nn.Module`` needs no adapter (its
signature says which). Each adapter is an ``nn.Module`` holding what it wraps (so a scorer's device and
``train()`` / ``eval()`` follow), and keeps its ``lower_better`` and ``input_range``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mst_clipiqa.reward.utils import UNIT

__all__ = ["RewardAdapter", "from_imscore", "from_pyiqa", "from_trl"]


class RewardAdapter(nn.Module):
    """``source`` called as ``reward(images, prompts)`` through ``score(source, images, prompts)``."""

    def __init__(self, source: Any, score: Callable[[Any, torch.Tensor, Sequence[str] | None], Any], form: str):
        super().__init__()
        self.source, self.form, self._score = source, form, score
        self.lower_better = bool(getattr(source, "lower_better", False))
        self.input_range = tuple(getattr(source, "input_range", UNIT))

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> Any:
        return self._score(self.source, images, prompts)

    def extra_repr(self) -> str:
        return self.form


def from_trl(reward_fn: Callable[..., Any]) -> RewardAdapter:
    """trl's / DDPO's ``reward_fn(images, prompts, prompt_metadata) -> (rewards, reward_metadata)``: called with
    one empty metadata dict per image; rewards as a tensor, numpy array or list (the metadata it returns is
    dropped)."""
    _check_callable(reward_fn, "from_trl", "reward_fn(images, prompts, metadata)")
    return RewardAdapter(reward_fn, _trl_scores, "trl reward_fn")


def from_imscore(scorer: nn.Module) -> RewardAdapter:
    """An imscore scorer, called through its ``.score(pixels, prompts)``, which holds its preprocessing (its
    ``forward`` is the raw backbone)."""
    if not callable(getattr(scorer, "score", None)):
        raise ValueError(f"from_imscore got a {type(scorer).__name__} without a .score method; expected an imscore "
                         "scorer (PickScorer, CLIPAestheticScorer, ...)")
    return RewardAdapter(scorer, _imscore_scores, "imscore scorer")


def from_pyiqa(metric: nn.Module) -> RewardAdapter:
    """A pyiqa no-reference metric, called on the images alone (its ``lower_better`` is honoured). One made with
    ``as_loss=True`` and a ``loss_reduction`` other than ``"none"`` is called once per image, since its
    reduction would mix the batch into one number. A full-reference metric needs its reference: wrap it as a
    plain reward, ``lambda images: metric(images, reference)``."""
    if getattr(metric, "metric_mode", "NR") != "NR":
        raise ValueError(f"pyiqa metric {metric.metric_name!r} is {metric.metric_mode} (full-reference): it needs a "
                         "reference image per image; pass lambda images: metric(images, reference), or use a "
                         "no-reference (NR) metric")
    _check_callable(metric, "from_pyiqa", "pyiqa.create_metric(...)")
    return RewardAdapter(metric, _pyiqa_scores, "pyiqa metric")


def _check_callable(fn: Any, adapter: str, expected: str) -> None:
    if not callable(fn):
        raise ValueError(f"{adapter} got a {type(fn).__name__}; expected {expected}")


def _trl_scores(fn: Callable[..., Any], images: torch.Tensor, prompts: Sequence[str] | None) -> Any:
    out = fn(images, prompts, tuple({} for _ in range(len(images))))
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        raise ValueError(f"trl reward_fn returned {type(out).__name__}; expected (rewards, metadata dict)")
    return out[0]


def _imscore_scores(scorer: nn.Module, images: torch.Tensor, prompts: Sequence[str] | None) -> Any:
    return scorer.score(images, None if prompts is None else list(prompts))


def _pyiqa_scores(metric: nn.Module, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
    as_loss = getattr(metric, "as_loss", False)
    if not as_loss and torch.is_grad_enabled() and images.requires_grad:
        raise ValueError(f"pyiqa metric {metric.metric_name!r} was created without as_loss=True, and pyiqa then "
                         "scores without gradients; the gradient methods need them: pyiqa.create_metric("
                         f"{metric.metric_name!r}, as_loss=True) (its lower_better is still honoured)")
    if as_loss and getattr(metric, "loss_reduction", "none") != "none":
        return torch.stack([metric(image[None]).reshape(()) for image in images])
    return metric(images)
