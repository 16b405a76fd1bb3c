"""What the reward accepts as pixels: range checks that say how to fix the input, and a clamp that keeps gradients."""
from __future__ import annotations

import math

import torch

from ..utils import check_range


def check_input_range(input_range: tuple[float, float], tolerance: float) -> tuple[float, float]:
    """A (low, high) pixel range of finite numbers with low < high, and a finite tolerance >= 0."""
    low, high = check_range(input_range, "input_range (the pixel range, e.g. (0, 1) or (-1, 1))")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number >= 0 (a fraction of the input range), got {tolerance!r}")
    return low, high


class ValueCheck:
    """The finiteness and range check of :func:`check_image_values`, started now and verified later.

    On a GPU the reductions are queued ahead of the caller's kernels and copied to
    the host without waiting, so ``verify()`` after the forward pass finds them done
    instead of idling the GPU while the host waits. Reads detached values: the
    graph is untouched.
    """

    def __init__(self, images: torch.Tensor, input_range: tuple[float, float], tolerance: float,
                 what: str = "images"):
        self.input_range, self.tolerance, self.what = input_range, tolerance, what
        with torch.no_grad():
            stats = torch.stack([torch.isfinite(images).all().float(), images.amin().float(),
                                 images.amax().float()])
        self._ready = None
        if stats.is_cuda:
            self._stats = torch.empty(3, pin_memory=True).copy_(stats, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._stats = stats

    def verify(self) -> None:
        """Raise the ``ValueError`` that says what was seen and the likely fix (divide by 255,
        ``input_range=(-1, 1)``, ``straight_through_clamp``); ``tolerance`` is the overshoot allowed, as a
        fraction of the range."""
        if self._ready is not None:
            self._ready.synchronize()
        finite, low, high = self._stats.tolist()
        if not finite:
            raise ValueError(f"{self.what} contain NaN or inf values; expected finite pixels")
        lo, hi = self.input_range
        slack = self.tolerance * (hi - lo)
        if low < lo - slack or high > hi + slack:
            raise ValueError(f"{self.what} have values in [{low:.4g}, {high:.4g}], outside input_range "
                             f"({lo:g}, {hi:g}); " + _advice(low, high, lo, hi))


def check_image_values(images: torch.Tensor, input_range: tuple[float, float], tolerance: float,
                       what: str = "images") -> None:
    """Finite values within ``input_range`` (one host sync), else a ``ValueError`` that says how to fix them."""
    ValueCheck(images, input_range, tolerance, what).verify()


def _advice(low: float, high: float, lo: float, hi: float) -> str:
    span = hi - lo
    if low >= lo - 0.1 * span and high <= hi + 0.1 * span:
        return (f"a slight overshoot, as decoded images have: straight_through_clamp(images, {lo:g}, {hi:g}) "
                "clamps it and keeps the gradients")
    if (lo, hi) == (0.0, 1.0) and low >= 0 and high <= 255:
        return "they look like 0..255 pixels: divide by 255 (uint8 images: images.float() / 255)"
    if (lo, hi) != (-1.0, 1.0) and low >= -1.1 and high <= 1.1:
        return "they look like [-1, 1] pixels: pass input_range=(-1, 1), or map them with (images + 1) / 2"
    return (f"map them into ({lo:g}, {hi:g}), or pass the input_range they use; for decoded images that "
            "overshoot slightly, straight_through_clamp(images) clamps and keeps the gradients")


def straight_through_clamp(images: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Clamp the values but pass gradients through unchanged, so out-of-range pixels still learn."""
    return images + (images.clamp(low, high) - images).detach()
