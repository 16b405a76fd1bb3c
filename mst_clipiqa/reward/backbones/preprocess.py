"""Differentiable CLIP preprocessing on tensors: resize the short side, centre crop, normalise.

Matches torchvision's ``Resize(size, BICUBIC) + CenterCrop(size)`` geometry
(the PIL pipeline CLIP was trained with) with antialiased bicubic
interpolation, so gradients flow from the embedding back to every input pixel.

The resize is separable, as in PIL: per axis, a matrix of precomputed
antialiased bicubic weights (those of ``F.interpolate(..., mode="bicubic",
antialias=True)``) applied by matrix multiplication. Only the rows the centre
crop keeps are computed, from only the input pixels they read, so time and
memory follow the output size: a 1 x 2000 strip costs what a 224 px image
does. Each weight matrix is banded; it is applied in blocks of output rows,
each a small dense matmul over the input rows that block reads.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..utils import no_autocast

BLOCK_ROWS = 32  # rows per block of a banded resize matrix: more multiply zeros, fewer make skinny matmuls


@dataclass(frozen=True)
class ImageSpec:
    """What an encoder expects: square side and per-channel mean / std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


Blocks = tuple[tuple[int, int, int, int, torch.Tensor], ...]  # (r0, r1, c0, c1, matrix[r0:r1, c0:c1])


@dataclass(frozen=True, eq=False)
class BandedMatrix:
    """A banded matrix as dense blocks of rows, each with the columns it reads (zero elsewhere), and its
    transpose blocked the same way (``.T``: what the backward of applying it applies)."""

    shape: tuple[int, int]
    blocks: Blocks
    blocks_t: Blocks

    @classmethod
    def from_dense(cls, dense: torch.Tensor) -> BandedMatrix:
        # Blocks of BLOCK_ROWS rows, or more when each row reads less than one column: small, not skinny matmuls
        rows, cols = dense.shape
        return cls((rows, cols), _blocks(dense, max(BLOCK_ROWS, math.ceil(BLOCK_ROWS * rows / cols))),
                   _blocks(dense.T, max(BLOCK_ROWS, math.ceil(BLOCK_ROWS * cols / rows))))

    @property
    def T(self) -> BandedMatrix:  # noqa: N802 (as torch names it)
        return BandedMatrix(self.shape[::-1], self.blocks_t, self.blocks)

    def to(self, device: torch.device, dtype: torch.dtype) -> BandedMatrix:
        def move(blocks: Blocks) -> Blocks:
            return tuple((*b[:4], b[4].to(device, dtype)) for b in blocks)

        return BandedMatrix(self.shape, move(self.blocks), move(self.blocks_t))


def _blocks(dense: torch.Tensor, rows: int) -> Blocks:
    blocks = []
    for r0 in range(0, len(dense), rows):
        part = dense[r0:r0 + rows]
        cols = (part != 0).any(0).nonzero()
        c0, c1 = (int(cols.min()), int(cols.max()) + 1) if len(cols) else (0, 1)
        blocks.append((r0, r0 + len(part), c0, c1, part[:, c0:c1].contiguous()))
    return tuple(blocks)


@dataclass(frozen=True)
class AxisResize:
    """Output rows ``[offset, offset + keep)`` of resizing one axis, read from input pixels ``start:stop``.

    ``matrix`` (keep, stop - start) is None when the axis keeps its size: the rows are then only cropped.
    """

    keep: int
    start: int
    stop: int
    matrix: BandedMatrix | None


def _bicubic_aa_weights(n_in: int, n_out: int, offset: int, keep: int) -> tuple[torch.Tensor, int]:
    """Rows ``offset .. offset + keep`` of the (n_out, n_in) antialiased bicubic resize matrix, float64.

    Returns those rows restricted to the input columns they read, (keep, span), and the first
    such column. Kernel, support and border renormalisation are those of ATen's
    ``upsample_bicubic2d_aa`` (and of PIL's ``BICUBIC``): Keys' cubic with a = -0.5,
    stretched by the scale when shrinking.
    """
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    center = scale * (torch.arange(offset, offset + keep, dtype=torch.float64) + 0.5)
    first = torch.trunc(center - support + 0.5).clamp(min=0).long()
    last = torch.trunc(center + support + 0.5).clamp(max=n_in).long()  # exclusive
    lo, hi = int(first.min()), int(last.max())
    cols = torch.arange(lo, hi, dtype=torch.float64)
    weights = _keys_cubic((cols[None] - center[:, None] + 0.5) / max(scale, 1.0))
    weights = weights * ((cols[None] >= first[:, None]) & (cols[None] < last[:, None]))
    total = weights.sum(1, keepdim=True)
    return weights / torch.where(total == 0, 1.0, total), lo


def _keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


@functools.lru_cache(maxsize=256)
def _axis_plan(n_in: int, n_out: int, offset: int, keep: int, device: torch.device | None = None,
               dtype: torch.dtype = torch.float64) -> AxisResize:
    """How to resize one axis; the weights in ``dtype`` on ``device``, cached (no host copies per call)."""
    if n_in == n_out:
        return AxisResize(keep, offset, offset + keep, None)
    if device is not None:
        plan = _axis_plan(n_in, n_out, offset, keep)
        return AxisResize(keep, plan.start, plan.stop, plan.matrix.to(device, dtype))
    dense, lo = _bicubic_aa_weights(n_in, n_out, offset, keep)
    return AxisResize(keep, lo, lo + dense.shape[1], BandedMatrix.from_dense(dense))


def _apply_banded(x: torch.Tensor, matrix: BandedMatrix, dim: int) -> torch.Tensor:
    """``matrix @ x`` along ``dim`` (-1 or -2) of ``x``: one matmul per block on a view of ``x``, so
    nothing the size of ``x`` is copied. Last axis: into views of the output (a concatenation there
    would be a strided copy); second to last: concatenated (CPU bmm into a strided view is slow)."""
    if dim == -2:
        return torch.cat([w @ x[..., c0:c1, :] for _, _, c0, c1, w in matrix.blocks], -2)
    x2d = x.reshape(-1, x.shape[-1])
    out = x.new_empty(len(x2d), matrix.shape[0])
    for r0, r1, c0, c1, w in matrix.blocks:
        torch.mm(x2d[:, c0:c1], w.T, out=out[:, r0:r1])
    return out.reshape(*x.shape[:-1], matrix.shape[0])


class _BandedResize(torch.autograd.Function):
    """Applying a banded matrix along one axis; its backward applies the transpose the same way
    (itself differentiable, so higher-order gradients work too)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, matrix: BandedMatrix, dim: int) -> torch.Tensor:
        ctx.matrix, ctx.dim = matrix, dim
        return _apply_banded(x, matrix, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # contiguous: a broadcast gradient (that of a sum) would send the matmuls down a slow path
        return _BandedResize.apply(grad.contiguous(), ctx.matrix.T, ctx.dim), None, None


def _resize_axis(x: torch.Tensor, plan: AxisResize, dim: int) -> torch.Tensor:
    return x if plan.matrix is None else _BandedResize.apply(x, plan.matrix, dim)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def resize_crop(images: torch.Tensor, size: int, crop: bool = True) -> torch.Tensor:
    """Resize the short side of (..., H, W) images to ``size`` (antialiased bicubic); with ``crop``, only the
    centre ``size`` x ``size`` square of the result is computed.

    Equal to ``F.interpolate(mode="bicubic", antialias=True)`` followed by a centre crop, with the
    same gradients: exactly in float64; in float32 within 4e-7 of the exact result on [0, 1] images
    (``F.interpolate``'s float32 kernel: within 6e-5). Half-precision images are resized in float32
    and returned in their dtype.
    """
    h, w = images.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = long if short == size else int(size * long / short)
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    out_h, out_w = (min(size, new_h), min(size, new_w)) if crop else (new_h, new_w)
    top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
    dtype = _compute_dtype(images.dtype)
    plan_h = _axis_plan(h, new_h, top, out_h, images.device, dtype)
    plan_w = _axis_plan(w, new_w, left, out_w, images.device, dtype)
    x = images
    if (plan_h.start, plan_h.stop) != (0, h):  # crop before resizing: only what the kept pixels read
        x = x[..., plan_h.start:plan_h.stop, :]
    if (plan_w.start, plan_w.stop) != (0, w):
        x = x[..., plan_w.start:plan_w.stop]
    if plan_h.matrix is None and plan_w.matrix is None:
        return x
    with no_autocast(images.device):  # an enclosing autocast must not run the resize matmuls in half precision
        x = x.to(dtype)
        if plan_h.keep * x.shape[-1] < plan_w.keep * x.shape[-2]:  # the smaller intermediate; ties: last axis first
            x = _resize_axis(_resize_axis(x, plan_h, -2), plan_w, -1)
        else:
            x = _resize_axis(_resize_axis(x, plan_w, -1), plan_h, -2)
    return x.to(images.dtype)


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side of (..., H, W) images to ``size``, keeping the aspect (antialiased bicubic)."""
    return resize_crop(images, size, crop=False)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    mean = images.new_tensor(spec.mean).view(1, 3, 1, 1)
    std = images.new_tensor(spec.std).view(1, 3, 1, 1)
    return (images - mean) / std


def preprocess(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], any size and aspect -> (B, 3, S, S) normalised for the encoder."""
    return normalize(resize_crop(images, spec.size), spec)


def fit_to_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, S, S), to batch images of mixed sizes.

    The same resize and crop ``preprocess`` applies, so a fitted image scores as the
    original would (``preprocess`` then finds nothing left to resize).
    """
    return resize_crop(image, size)
