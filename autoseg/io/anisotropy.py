"""When a grid is anisotropic: one rule for planning, resampling and augmentation.

nnU-Net's threshold: above a 3:1 ratio of the coarsest to the finest spacing (a 0.5 x 0.5 x
4 mm thigh MRI stack: 8) a voxel is a thin slab rather than a cube. Then spline interpolation
across slabs invents structure (overshoot, ghost edges), the thick axis is resampled apart
(nearest / linear), the target spacing's thick axis comes from its 10th percentile, and 3D
augmentation rotates in-plane only (out of plane it would mix voxels 3x further apart). The
planner, the resampler and the loader read the threshold here (before: three 3.0s)."""

from __future__ import annotations

from collections.abc import Sequence

ANISOTROPY_RATIO = 3.0


def anisotropy_ratio(spacing: Sequence[float]) -> float:
    """Largest over smallest spacing: 3.0 / 0.75 = 4.0 for a 0.75 x 0.75 x 3 mm MRI."""
    return float(max(spacing) / min(spacing))


def is_anisotropic(spacing: Sequence[float], ratio: float = ANISOTROPY_RATIO) -> bool:
    """``max(spacing) / min(spacing) > ratio`` (3 by default)."""
    return anisotropy_ratio(spacing) > ratio
