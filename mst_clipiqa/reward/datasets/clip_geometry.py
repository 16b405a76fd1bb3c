"""Encoder features with real CLIP's geometry, for testing heads without CLIP weights.

Real CLIP ViT-B/32 text features of "a photo with {bad, ..., perfect} quality"
are close to one another (pairwise cosines about 0.9), and an image's cosines
to them differ by only about 0.01-0.03. Random towers give neither: their
level texts differ by tenths, so a template head at temperature 100 starts
saturated there and not on CLIP. :func:`clip_like_features` builds stream
embeddings and level text features with CLIP's geometry, whose quality signal
is known, so the template head can be tested on the geometry it meets in use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import QualityDataset, QualitySample


@dataclass
class ClipLikeFeatures:
    """Stream embeddings (N, D) and level text features (K, D), all unit vectors, with their data set."""

    f_coarse: torch.Tensor
    f_fine: torch.Tensor
    text_features: torch.Tensor
    dataset: QualityDataset


def clip_like_features(n: int = 240, dim: int = 512, levels: int = 5, text_cosine: float = 0.9,
                       image_text_cosine: float = 0.25, signal: float = 0.06, seed: int = 0) -> ClipLikeFeatures:
    """``n`` images whose quality (1-5) moves their embedding towards the best level's text.

    Text features: ``normalize(c + a u_k)`` with orthonormal ``u_k``, ``a`` set so that
    pairwise cosines are ``text_cosine``. Image embeddings: ``image_text_cosine`` along
    ``c``, ``signal`` x standardised quality along ``u_K - u_1``, isotropic noise for the
    rest; the fine stream is a random rotation of its own noisy copy. Each group of
    four images shares a prompt (so prompt-grouped splits work).
    """
    if n < 8 or dim < levels + 2 or not 0 < text_cosine < 1:
        raise ValueError(f"n={n}, dim={dim}, text_cosine={text_cosine}; expected n >= 8, "
                         f"dim >= levels + 2 and 0 < text_cosine < 1")
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0].T
    common, units = basis[0], basis[1:levels + 1]
    a = float(np.sqrt(1.0 / text_cosine - 1.0))
    text = F.normalize(common + a * units, dim=-1)
    quality = 1.0 + 4.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    direction = F.normalize(units[-1] - units[0], dim=0)
    standard = (quality - quality.mean()) / quality.std()

    def stream(rotation: torch.Tensor | None) -> torch.Tensor:
        noise = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        noise = noise - (noise @ common)[:, None] * common
        rest = float(np.sqrt(1.0 - image_text_cosine**2))
        x = image_text_cosine * common + signal * standard[:, None] * direction + rest * F.normalize(noise, dim=-1)
        x = F.normalize(x, dim=-1)
        return x if rotation is None else x @ rotation

    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0]
    f_coarse, f_fine = stream(None), stream(rotation)
    samples = [QualitySample(Path(f"clip_like_{i:04d}.png"), f"prompt {i // 4}", {"quality": float(q)})
               for i, q in enumerate(quality.tolist())]
    dataset = QualityDataset(samples, "clip-like", ("quality",), label_ranges={"quality": (1.0, 5.0)},
                             split_by="prompt")
    return ClipLikeFeatures(f_coarse.float(), f_fine.float(), text.float(), dataset)
