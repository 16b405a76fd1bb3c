"""Score heads on the fused features: template (variant A) and prompt-anchored (variant B), and the table of head
kinds (``HEAD_KINDS``) that the config, the model and training read."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TemplateHead(nn.Module):
    """Softmax over scaled cosines to K quality-level text embeddings; score = sum_k k p_k in [1, K].

    The temperature ``tau`` (the paper's, initialised at 100) is learned in log space,
    ``tau = exp(log_temperature)``, as CLIP learns its ``logit_scale``: a step changes it by a
    fraction of itself, so at the fusion's learning rate it can move at all (a linear 100 moves
    by 1e-4 per step), and it stays positive. State dicts holding the linear ``temperature``
    (the reference's, and this library's before) load unchanged.
    """

    def __init__(self, num_levels: int = 5, temperature: float = 100.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())
        self.register_buffer("levels", torch.arange(1, num_levels + 1, dtype=torch.float32), persistent=False)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def logits(self, z: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``tau * cos(z, t_k)``, (B, K)."""
        return self.temperature * F.normalize(z, dim=-1) @ text_features.t()

    def forward(self, z: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.logits(z, text_features).softmax(dim=-1) @ self.levels

    def moments(self, z: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The score and the spread of the level distribution, ``sum_k p_k (k - score)^2``."""
        p = self.logits(z, text_features).softmax(dim=-1)
        score = p @ self.levels
        return score, (p * (self.levels - score[..., None]) ** 2).sum(-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        linear = state_dict.pop(prefix + "temperature", None)
        if linear is not None:
            if not bool((linear > 0).all()):
                raise ValueError(f"{prefix}temperature must be > 0 to be learned in log space, got {linear}")
            state_dict[prefix + "log_temperature"] = linear.log()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PromptHead(nn.Module):
    """Cross-attention from the fused feature to the prompt's token states, then a residual MLP.

    Padding keys are masked, so a pair's score does not depend on the other
    prompts in the batch.
    """

    def __init__(self, dim: int, text_width: int, num_heads: int = 8):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, kdim=text_width, vdim=text_width, batch_first=True)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.W_1 = nn.Linear(dim, dim)
        self.W_2 = nn.Linear(dim, dim)
        self.w_o = nn.Linear(dim, 1)

    def forward(self, z: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended, _ = self.cross_attn(z[:, None], states, states, key_padding_mask=~mask, need_weights=False)
        z = z + self.alpha * attended[:, 0]
        return self.w_o(F.gelu(self.W_1(z)) + self.W_2(z)).squeeze(-1)


@dataclass(frozen=True)
class HeadSpec:
    """A head kind: ``build(config, coarse)`` makes the head for a model config and its coarse backbone;
    ``score_range(levels)`` is its default output range for ``levels`` quality levels. A head that
    ``needs_prompt`` is called as ``head(z, token_states, mask)``; any other as ``head(z, template_features)``
    (the normalised text embeddings of the quality levels)."""

    build: Callable[[Any, Any], nn.Module]
    score_range: Callable[[int], tuple[float, float]]
    needs_prompt: bool


HEAD_KINDS: dict[str, HeadSpec] = {
    "template": HeadSpec(lambda config, coarse: TemplateHead(len(config.levels), config.temperature_init),
                         lambda levels: (1.0, float(levels)), needs_prompt=False),
    "prompt": HeadSpec(lambda config, coarse: PromptHead(coarse.embed_dim, coarse.text_width, config.attention_heads),
                       lambda levels: (0.0, 5.0), needs_prompt=True),
}


def register_head_kind(name: str, spec: HeadSpec) -> HeadSpec:
    """Add a head kind (``MSTCLIPIQAConfig(heads={output: name})``); a name already taken raises ``ValueError``."""
    if not isinstance(name, str) or not name or name in HEAD_KINDS:
        raise ValueError(f"head kind {name!r} is taken or not a name; the kinds are {sorted(HEAD_KINDS)}")
    HEAD_KINDS[name] = spec
    return spec
