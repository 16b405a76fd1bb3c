"""What the trainer differentiates: one forward for accelerate / DDP."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..model import MSTCLIPIQA


class Scorer(nn.Module):
    """One forward for accelerate / DDP: images (encoders run) or cached encoder outputs."""

    def __init__(self, model: MSTCLIPIQA):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """(B,) scores per output; an ensemble's members' scores, (K, B), each trained on its own resample."""
        model = self.model
        if model.config.ensemble > 1:
            if "images" in inputs:
                return model.member_scores(*model.encode_images(inputs["images"]), inputs["prompts"])[0]
            return model.member_scores(**inputs)[0]
        if "images" in inputs:
            return model(inputs["images"], inputs["prompts"])
        return model.score_features(**inputs)
