"""Ensemble members (a fusion with its heads) over one pair of frozen encoders, and reading them all at once."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .fusion import GatedFusion
from .heads import HEAD_KINDS


class Member(nn.Module):
    """One more fusion and set of heads: members 1..K-1 of an ensemble (member 0 is the model's own)."""

    def __init__(self, fusion: GatedFusion, heads: nn.ModuleDict):
        super().__init__()
        self.fusion = fusion
        self.heads = heads


def read_members(parts: Sequence[tuple[GatedFusion, nn.ModuleDict]], kinds: Mapping[str, str], f_coarse: torch.Tensor,
                 f_fine: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor] | None,
                 template: torch.Tensor | None, gate: float | None = None, spread: bool = False
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each member's scores, (K, B) per output, and with ``spread`` the level variance ``sum_k p_k (k - s)^2``
    of every head that has ``moments`` (template heads), (K, B) per such output."""
    scores: dict[str, list[torch.Tensor]] = {}
    spreads: dict[str, list[torch.Tensor]] = {}
    for fusion, heads in parts:
        z = fusion(f_coarse, f_fine, gate)
        for name, head in heads.items():
            if HEAD_KINDS[kinds[name]].needs_prompt:
                score = head(z, *text)
            elif spread and hasattr(head, "moments"):
                score, variance = head.moments(z, template)
                spreads.setdefault(name, []).append(variance)
            else:
                score = head(z, template)
            scores.setdefault(name, []).append(score)
    return ({name: torch.stack(values) for name, values in scores.items()},
            {name: torch.stack(values) for name, values in spreads.items()})


def set_ensemble(model: Any, k: int) -> None:
    """Make an ``MSTCLIPIQA`` an ensemble of ``k`` members in place (``config.ensemble = k``): members beyond
    the ones it has start as copies of member 0 (training on bootstrap resamples sets them apart); extra
    members are dropped. The encoders are shared, never copied."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"ensemble must be an integer >= 1, got {k!r}")
    members = list(model.members)[: k - 1]
    members += [Member(copy.deepcopy(model.fusion), copy.deepcopy(model.heads)) for _ in range(k - 1 - len(members))]
    model.members = nn.ModuleList(members)
    model.config.ensemble = k
