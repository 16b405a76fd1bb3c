"""What the reward accepts as pixels: range checks, and a clamp that keeps gradients."""
from __future__ import annotations

import torch


def check_image_values(images: torch.Tensor, input_range: tuple[float, float], tolerance: float) -> None:
    """One host sync for finiteness and range; reads detached values, so the graph is untouched."""
    with torch.no_grad():
        stats = torch.stack([torch.isfinite(images).all().float(), images.amin(), images.amax()]).tolist()
    finite, low, high = stats
    if not finite:
        raise ValueError("images contain NaN or inf values; expected finite pixels")
    lo, hi = input_range
    slack = tolerance * (hi - lo)
    if low < lo - slack or high > hi + slack:
        raise ValueError(f"images have values in [{low:.4g}, {high:.4g}], outside input_range ({lo}, {hi}); "
                         f"pass input_range=(-1, 1) for [-1, 1] images, or map them into ({lo}, {hi})")


def straight_through_clamp(images: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Clamp the values but pass gradients through unchanged, so out-of-range pixels still learn."""
    return images + (images.clamp(low, high) - images).detach()
