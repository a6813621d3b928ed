"""Target spacing and resampling rules.

All spacings and shapes are in array order (``(z, y, x)`` / ``(y, x)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoseg.io.anisotropy import ANISOTROPY_RATIO, anisotropy_ratio
from autoseg.planning.plan import Resampling

# nnU-Net's threshold (3:1), one for every stage: autoseg.io.anisotropy.
ANISOTROPY_THRESHOLD = ANISOTROPY_RATIO
# The thick axis' target is the 10th percentile of its spacings (not the median) for
# anisotropic data with few slices: the median would throw away through-plane resolution of the
# finer half of the cases, the 10th percentile keeps it for ~90 % of them while the finest few
# outliers do not force everyone to be upsampled.
THICK_AXIS_PERCENTILE = 10.0


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def thick_axis(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The axis of the coarsest spacing when it is more than ``threshold`` (3) times the finest
    spacing, else None. (3.0, 0.75, 0.75) -> 0 (ratio 4); (1.5, 0.6, 0.6) -> None (ratio 2.5)."""
    if anisotropy_ratio(spacing) > threshold:
        return int(np.argmax(spacing))
    return None


def target_spacing(
    spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]
) -> tuple[list[float], str]:
    """Target spacing from the per-case spacings and (cropped) shapes.

    Rule: the median spacing per axis. Exception (3D only), as in nnU-Net: when the data are
    anisotropic in spacing *and* in voxels, i.e. the coarsest axis' median spacing is more than
    3x the finest axis' median spacing *and* the coarsest axis has fewer than 1/3 of the voxels
    of the smallest other axis (a stack of few thick slices), that axis takes the 10th
    percentile of its per-case spacings instead of the median, but never a value finer than the
    largest median spacing of the other axes (which would interpolate slices that are finer
    than the in-plane pixels). With identical slice thickness in every case (the usual MRI
    protocol) the 10th percentile equals the median.

    Example: 256 x 256 x 40 at 0.75 x 0.75 x 3 mm -> ratio 4.0 > 3 and 40 x 3 = 120 < 256
    -> thick axis at its 10th percentile (3.0): target (3.0, 0.75, 0.75).
    """
    sp = np.asarray(spacings, dtype=float)
    sh = np.asarray(shapes, dtype=float)
    median = np.median(sp, axis=0)
    why = f"median spacing {_fmt(median)}"
    if sp.shape[1] != 3:
        return [float(v) for v in median], why + " (2D data: median, no anisotropy rule)"
    axis = int(np.argmax(median))
    others = [a for a in range(3) if a != axis]
    ratio = float(median[axis] / median[others].min())
    median_shape = np.median(sh, axis=0)
    few_slices = bool(median_shape[axis] * 3 < median_shape[others].min())
    if ratio <= ANISOTROPY_THRESHOLD or not few_slices:
        reason = (
            f"anisotropy {ratio:.3g} <= {ANISOTROPY_THRESHOLD:g}"
            if ratio <= ANISOTROPY_THRESHOLD
            else f"anisotropy {ratio:.3g} > {ANISOTROPY_THRESHOLD:g} but axis {axis} has "
            f"{median_shape[axis]:g} voxels, not < 1/3 of {median_shape[others].min():g}"
        )
        return [float(v) for v in median], f"{why}; {reason} -> median on every axis"
    p10 = float(np.percentile(sp[:, axis], THICK_AXIS_PERCENTILE))
    floor = float(median[others].max())
    target = [float(v) for v in median]
    target[axis] = max(p10, floor)
    why += (
        f"; anisotropy {ratio:.3g} > {ANISOTROPY_THRESHOLD:g} and axis {axis} has "
        f"{median_shape[axis]:g} voxels < 1/3 of {median_shape[others].min():g} -> thick axis "
        f"{axis} takes the 10th percentile of its spacings {p10:.4g}"
    )
    if p10 < floor:
        why += f", raised to the coarsest in-plane spacing {floor:.4g}"
    return target, why + f": target {_fmt(target)}"


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> list[int]:
    """Shape after resampling to ``target``: round(shape * spacing / target), at least 1."""
    return [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target)]


def median_resampled_shape(
    shapes: Sequence[Sequence[int]],
    spacings: Sequence[Sequence[float]],
    target: Sequence[float],
) -> list[int]:
    """Median over cases of each case's resampled shape (per axis, rounded)."""
    per_case = [resampled_shape(s, sp, target) for s, sp in zip(shapes, spacings)]
    return [int(round(v)) for v in np.median(np.asarray(per_case, dtype=float), axis=0)]


def total_resampled_voxels(
    shapes: Sequence[Sequence[int]],
    spacings: Sequence[Sequence[float]],
    target: Sequence[float],
) -> int:
    """Voxels of the whole (cropped) dataset at ``target`` spacing: bounds the batch size."""
    return int(sum(int(np.prod(resampled_shape(s, sp, target))) for s, sp in zip(shapes, spacings)))


def resampling_rule(
    target: Sequence[float], spacing_median: Sequence[float]
) -> tuple[Resampling, str]:
    """Interpolation orders for preprocessing.

    Images: cubic spline (order 3) in-plane. Labels: one-hot maps resampled linearly (order 1)
    and arg-maxed, which keeps thin structures that nearest-neighbour would break. When either
    the original (median) or the target spacing is anisotropic (ratio > 3), the thick axis is
    resampled on its own with nearest neighbour (order 0) for both images and labels: cubic
    splines between slices 3-4 mm apart overshoot and invent intermediate anatomy
    (nnU-Net's "separate z" resampling).
    """
    axis = thick_axis(spacing_median)
    source = "median spacing"
    if axis is None:
        axis, source = thick_axis(target), "target spacing"
    if axis is None:
        return (
            Resampling(thick_axis=None),
            f"anisotropy {anisotropy_ratio(spacing_median):.3g} (median) and "
            f"{anisotropy_ratio(target):.3g} (target) <= {ANISOTROPY_THRESHOLD:g} -> "
            "image order 3, labels one-hot order 1, on every axis",
        )
    return (
        Resampling(
            thick_axis=axis,
            image_order=3,
            image_order_thick_axis=0,
            label_order=1,
            label_order_thick_axis=0,
        ),
        f"{source} anisotropy > {ANISOTROPY_THRESHOLD:g} -> thick axis {axis} resampled "
        "separately with nearest neighbour (order 0); in-plane image order 3, labels one-hot "
        "order 1",
    )
