"""Training loss of MST-CLIPIQA: MSE plus a pairwise margin ranking term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _flat_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.numel() != target.numel():
        raise ValueError(f"pred has {pred.numel()} values but target has {target.numel()}")
    if pred.numel() == 0:
        raise ValueError("empty batch: pred and target have no values")
    return pred.reshape(-1), target.reshape(-1).to(pred.dtype)


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.1,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``ReLU(margin - sign(q_i - q_j) * (s_i - s_j))`` over pairs with ``q_i != q_j``.

    ``s`` is ``pred`` and ``q`` is ``target``. The term is symmetric in (i, j), so the
    mean over ordered pairs equals the mean over unordered pairs. With no such
    pair the loss is 0, still attached to the graph. ``weights`` (per sample, e.g. bootstrap counts)
    weight the pair (i, j) by ``w_i w_j``: as if sample i appeared ``w_i`` times.
    """
    s, q = _flat_pair(pred, target)
    sign = torch.sign(q[:, None] - q[None, :])
    terms = F.relu(margin - sign * (s[:, None] - s[None, :]))
    mask = (sign != 0).to(s.dtype)
    if weights is not None:
        w = weights.reshape(-1).to(s.dtype)
        mask = mask * w[:, None] * w[None, :]
    return (terms * mask).sum() / mask.sum().clamp_min(1.0)


def mse_rank_loss(
    pred: torch.Tensor, target: torch.Tensor, margin: float = 0.1, lam: float = 1.0,
    weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``MSE(pred, target) + lam * pairwise_rank_loss(pred, target, margin)`` (method doc, item 4); ``weights``
    count each sample that many times (a bootstrap resample's counts)."""
    s, q = _flat_pair(pred, target)
    if weights is None:
        return F.mse_loss(s, q) + lam * pairwise_rank_loss(s, q, margin)
    w = weights.reshape(-1).to(s.dtype)
    mse = (w * (s - q) ** 2).sum() / w.sum().clamp_min(1.0)
    return mse + lam * pairwise_rank_loss(s, q, margin, w)
