"""Gated feature fusion (GFF) of the coarse and fine stream embeddings."""
from __future__ import annotations

import torch
from torch import nn


class GatedFusion(nn.Module):
    """z = g * W_c f_c + (1 - g) * W_f f_f with g = sigmoid(W_g ReLU(W_h [f_c; f_f])).

    ``init="zero_shot"`` starts W_c and W_f as identity and the gate as the
    constant sigmoid(``gate_bias``), leaning to the coarse stream: the coarse embedding lives
    in the same space as the ViT-B/32 text features the template head compares
    against, so an untrained model is a CLIP-IQA-style scorer. ``"random"``
    keeps PyTorch's default initialisation, as the reference code does.
    """

    def __init__(self, coarse_dim: int, fine_dim: int, out_dim: int, hidden: int = 128,
                 init: str = "zero_shot", gate_bias: float = 2.0):
        super().__init__()
        self.W_h = nn.Linear(coarse_dim + fine_dim, hidden)
        self.W_g = nn.Linear(hidden, out_dim)
        self.W_c = nn.Linear(coarse_dim, out_dim)
        self.W_f = nn.Linear(fine_dim, out_dim)
        if init == "zero_shot":
            for layer in (self.W_c, self.W_f):
                nn.init.eye_(layer.weight)
                nn.init.zeros_(layer.bias)
            nn.init.zeros_(self.W_g.weight)  # the gate starts input-independent: a deterministic scorer
            nn.init.constant_(self.W_g.bias, gate_bias)

    def forward(self, f_c: torch.Tensor, f_f: torch.Tensor, gate: float | None = None) -> torch.Tensor:
        """``gate`` forces g (1: the coarse stream alone, 0: the fine stream alone) instead of computing it."""
        if gate is None:
            h = torch.relu(self.W_h(torch.cat([f_c, f_f], dim=-1)))
            g = torch.sigmoid(self.W_g(h))
        else:
            g = gate
        return g * self.W_c(f_c) + (1 - g) * self.W_f(f_f)
