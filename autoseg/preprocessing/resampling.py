"""Resampling between voxel grids, anisotropy-aware, as separable matrix products.

Every interpolation used here (B-spline of order 0, 1 or 3 with edge extension) is a tensor
product of 1D interpolations, so resampling a volume is three small matrix products, one per
axis. The 1D matrix is obtained by letting ``scipy.ndimage.zoom`` interpolate the identity
matrix, so the result equals ``scipy.ndimage.zoom(..., grid_mode=True, mode="nearest")``
(within 1e-6) — the same convention as ``skimage.transform.resize``, which nnU-Net uses — but
goes through BLAS instead of evaluating 64 spline taps per voxel. Measured on 2 cores
(24x160x160 -> 29x200x200, order 3): 6 ms here, 235 ms with 3D ``scipy.ndimage.zoom``, 96 ms
with SimpleITK's B-spline resampler; 60x320x320 -> 80x267x267: 39 ms, 1.14 s and 0.57 s.

Grids are aligned by their outer voxel edges (``grid_mode``): output voxel ``i`` of ``n_out``
samples the input at ``(i + 0.5) * n_in / n_out - 0.5``. The physical field of view therefore
stays put, and going back to the exact original shape (``invert``) needs only the shapes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi

from autoseg.io.anisotropy import ANISOTROPY_RATIO, is_anisotropic

# Above this many matrix entries (16 MB of float32; a 4000 -> 5000 axis would need 80 MB) an
# axis is resampled with scipy instead of a dense matrix.
MAX_MATRIX_ENTRIES = 4_000_000
# One-hot scores closer than this count as a tie (float32 rounding of weights such as 0.5).
TIE_TOLERANCE = 1e-5


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape that keeps the physical extent: ``round(n * spacing / new_spacing)``, at least 1."""
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing, strict=True)
    )


def thick_axis(
    spacing_from: Sequence[float],
    spacing_to: Sequence[float],
    ratio: float = ANISOTROPY_RATIO,
) -> int | None:
    """The axis to resample apart from the others, or None for plain 3D interpolation.

    The source grid decides first (its slices are the ones we must not blur across); if it is
    isotropic, an anisotropic target decides. Only a unique largest spacing counts as thick:
    with two equally thick axes there is no in-plane direction to interpolate in.
    """
    for spacing in (spacing_from, spacing_to):
        if is_anisotropic(spacing, ratio):
            largest = max(spacing)
            axes = [i for i, s in enumerate(spacing) if math.isclose(s, largest, rel_tol=1e-6)]
            if len(axes) == 1:
                return axes[0]
    return None


def axis_orders(
    spacing_from: Sequence[float],
    spacing_to: Sequence[float],
    order: int,
    order_thick: int,
    ratio: float = ANISOTROPY_RATIO,
    axis: int | None = None,
) -> tuple[int, ...]:
    """Spline order per axis: ``order`` everywhere, ``order_thick`` on the thick axis if any.

    ``axis`` forces the thick axis (the plan's); None applies :func:`thick_axis`.
    """
    if axis is None:
        axis = thick_axis(spacing_from, spacing_to, ratio)
    return tuple(order_thick if i == axis else order for i in range(len(spacing_from)))


@functools.lru_cache(maxsize=256)
def interpolation_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix M with ``M @ v`` = order-``order`` resampling of ``v``.

    Built by interpolating the identity with ``scipy.ndimage.zoom`` (B-spline prefilter
    included), so it is exactly scipy's operator. Cached: a dataset has few distinct shapes.
    """
    if order == 0:
        m = np.zeros((n_out, n_in), np.float32)
        m[np.arange(n_out), nearest_indices(n_in, n_out)] = 1.0
    else:
        eye = np.eye(n_in, dtype=np.float64)
        m = ndi.zoom(
            eye, (n_out / n_in, 1.0), order=order, mode="nearest", grid_mode=True, prefilter=True
        ).astype(np.float32)
    m.setflags(write=False)
    return m


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output voxel for nearest-neighbour resampling (edge-aligned)."""
    coords = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(np.floor(coords + 0.5), 0, n_in - 1).astype(np.intp)


def _resample_axis(a: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    if order == 0:
        return np.take(a, nearest_indices(n_in, n_out), axis=axis)
    if n_in * n_out > MAX_MATRIX_ENTRIES:
        zoom = [1.0] * a.ndim
        zoom[axis] = n_out / n_in
        return ndi.zoom(a, zoom, order=order, mode="nearest", grid_mode=True).astype(np.float32)
    m = interpolation_matrix(n_in, n_out, order)
    moved = np.moveaxis(a, axis, -1)
    out = moved.reshape(-1, n_in) @ m.T
    return np.moveaxis(out.reshape(*moved.shape[:-1], n_out), -1, axis)


def resample_array(
    array: np.ndarray, new_shape: Sequence[int], orders: Sequence[int]
) -> np.ndarray:
    """Resample one (Z, Y, X) (or any-rank) float array to ``new_shape``, order per axis.

    Axes that shrink most go first so the later, more expensive products see fewer voxels.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if len(new_shape) != array.ndim or len(orders) != array.ndim:
        raise ValueError(f"shape {array.shape} vs new shape {new_shape} / orders {orders}")
    out = np.asarray(array, dtype=np.float32)
    if out.shape == new_shape:
        return out.copy()
    for axis in sorted(range(out.ndim), key=lambda i: new_shape[i] / out.shape[i]):
        out = _resample_axis(out, axis, new_shape[axis], orders[axis])
    return np.ascontiguousarray(out, dtype=np.float32)


def resample_image(
    image: np.ndarray,
    new_shape: Sequence[int],
    spacing_from: Sequence[float],
    spacing_to: Sequence[float],
    *,
    order: int = 3,
    order_thick: int = 0,
    anisotropy_ratio: float = ANISOTROPY_RATIO,
    thick: int | None = None,
) -> np.ndarray:
    """Resample a (C, Z, Y, X) image channel by channel; float32 out.

    Cubic (order 3) in 3D; when the spacing is anisotropic (ratio > 3), cubic in-plane slice
    by slice and ``order_thick`` (0 = nearest) along the thick axis — a tensor product, so this
    is exactly "2D cubic per slice, then nearest across slices". ``thick`` forces the thick
    axis (the plan's); None lets :func:`thick_axis` decide from the two spacings.
    """
    orders = axis_orders(spacing_from, spacing_to, order, order_thick, anisotropy_ratio, thick)
    return np.stack([resample_array(c, new_shape, orders) for c in image]).astype(np.float32)


def resample_probabilities(
    probabilities: np.ndarray,
    new_shape: Sequence[int],
    spacing_from: Sequence[float],
    spacing_to: Sequence[float],
    *,
    order: int = 1,
    order_thick: int = 0,
    anisotropy_ratio: float = ANISOTROPY_RATIO,
    thick: int | None = None,
) -> np.ndarray:
    """Resample (K, Z, Y, X) class probabilities: linear (no overshoot, stays in [0, 1])."""
    return resample_image(
        probabilities,
        new_shape,
        spacing_from,
        spacing_to,
        order=order,
        order_thick=order_thick,
        anisotropy_ratio=anisotropy_ratio,
        thick=thick,
    )


def present_labels(seg: np.ndarray) -> list[int]:
    """Label values present in a uint8 map, ascending (a histogram: faster than np.unique)."""
    if seg.dtype != np.uint8:
        return [int(v) for v in np.unique(seg)]
    return [int(v) for v in np.flatnonzero(np.bincount(seg.ravel(), minlength=256))]


def _axis_block(n_in: int, n_out: int, order: int, lo: int, hi: int) -> tuple[np.ndarray, int, int]:
    """The rows of the interpolation matrix that see input ``[lo, hi)``: (block, start, stop).

    For orders 0 and 1 the matrix is banded, so a small input box maps to a small output box.
    """
    m = interpolation_matrix(n_in, n_out, order)
    rows = np.flatnonzero(np.any(m[:, lo:hi] != 0, axis=1))
    if rows.size == 0:  # nearest neighbour can skip a thin input range entirely
        return m[0:0, lo:hi], 0, 0
    start, stop = int(rows[0]), int(rows[-1]) + 1
    return m[start:stop, lo:hi], start, stop


def _resample_box(
    box_array: np.ndarray,
    box: Sequence[tuple[int, int]],
    shape: Sequence[int],
    new_shape: Sequence[int],
    orders: Sequence[int],
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Resample the part of a volume that is non-zero only inside ``box``; exact.

    Returns the output values and where they go: outside that region the result is 0.
    """
    a = box_array
    out_box: dict[int, slice] = {}
    for axis in sorted(range(a.ndim), key=lambda i: new_shape[i] / shape[i]):
        lo, hi = box[axis]
        if shape[axis] == new_shape[axis]:
            out_box[axis] = slice(lo, hi)
            continue
        block, start, stop = _axis_block(shape[axis], new_shape[axis], orders[axis], lo, hi)
        moved = np.moveaxis(a, axis, -1)
        res = moved.reshape(-1, hi - lo) @ block.T
        a = np.moveaxis(res.reshape(*moved.shape[:-1], stop - start), -1, axis)
        out_box[axis] = slice(start, stop)
    return a, tuple(out_box[i] for i in range(a.ndim))


def resample_labels(
    seg: np.ndarray,
    new_shape: Sequence[int],
    spacing_from: Sequence[float],
    spacing_to: Sequence[float],
    *,
    order: int = 1,
    order_thick: int = 0,
    anisotropy_ratio: float = ANISOTROPY_RATIO,
    thick: int | None = None,
) -> np.ndarray:
    """Resample an integer label map (Z, Y, X) to ``new_shape``; uint8 out.

    Each label's one-hot mask is resampled with ``order`` (``order_thick`` along a thick axis)
    and every voxel takes the label with the largest value; a tie goes to the higher label,
    so foreground wins a 50/50 split against background. With order 1 (linear, the default)
    this gives sub-voxel boundaries when upsampling instead of nearest neighbour's staircases
    and, unlike nnU-Net's per-label threshold at 0.5, never leaves a voxel with no label or
    two. Measured on discs rasterised at the target grid (0.5 mm -> 0.35/0.6/0.7/1.0 mm),
    Dice with the true disc for radii of 2-4 mm: 0.90-0.98 (linear) vs 0.88-0.97 (nearest);
    a 1 mm-wide nerve halved to 1 mm voxels keeps its voxel, nearest loses it. Order 0
    everywhere is plain nearest neighbour. ``thick`` forces the thick axis (None:
    :func:`thick_axis` decides).

    Cost: each foreground label is resampled inside its bounding box only (orders 0/1 are
    banded, so this is exact), and background is 1 minus the foreground sum (interpolation
    weights sum to 1): a nerve occupying 1 % of the volume costs ~1 % of a full resampling.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if seg.shape == new_shape:
        return seg.astype(np.uint8, copy=True)
    orders = axis_orders(spacing_from, spacing_to, order, order_thick, anisotropy_ratio, thick)
    if all(o == 0 for o in orders):
        out = seg
        for axis in range(seg.ndim):
            out = np.take(out, nearest_indices(out.shape[axis], new_shape[axis]), axis=axis)
        return np.ascontiguousarray(out, dtype=np.uint8)
    from autoseg.preprocessing.cropping import bounding_box

    fg_sum = np.zeros(new_shape, np.float32)
    scores = []
    for v in present_labels(seg):
        if v == 0:
            continue
        mask = seg == v
        box = bounding_box(mask)
        inner = mask[tuple(slice(a, b) for a, b in box)].astype(np.float32)
        if any(n * m > MAX_MATRIX_ENTRIES for n, m in zip(seg.shape, new_shape)):
            score, where = resample_array(mask, new_shape, orders), (slice(None),) * seg.ndim
        else:
            score, where = _resample_box(inner, box, seg.shape, new_shape, orders)
        fg_sum[where] += score
        scores.append((int(v), where, score))
    best = 1.0 - fg_sum  # background's one-hot score
    out = np.zeros(new_shape, np.uint8)
    for v, where, score in scores:  # ascending, so on a tie the later (higher) label wins
        best_here, out_here = best[where], out[where]
        out_here[score >= best_here - TIE_TOLERANCE] = v
        np.maximum(best_here, score, out=best_here)
    return out
