"""Surface voxels and surface-to-surface distances in millimetres.

Definitions (documentation/evaluation.md repeats them):

- The **surface** of a binary mask is the set of its voxels that have at least one
  face-neighbour (6-neighbourhood in 3D, 4 in 2D) outside the mask. Voxels on the image border
  count as surface: the outside of the image is background.
- The **directed distances** from mask A to mask B are, for every surface voxel of A, the
  Euclidean distance in mm (voxel centres, spacing-aware) to the nearest surface voxel of B.
- **HD95** is the larger of the two directed 95th percentiles (linear interpolation between
  order statistics, numpy's default); **HD** (the classical Hausdorff distance) is the same
  with the 100th percentile; **ASSD** is the mean of both directed sets pooled.

Work is done inside the bounding box of both masks (plus one voxel), which gives exactly the
same distances as the full image because every surface voxel of either mask lies inside it,
and makes a tiny nerve in a 24x160x160 volume cost milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt


def bounding_slices(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (None if empty)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other)) if other else np.flatnonzero(mask)
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), int(hit[-1]) + margin + 1))
    return tuple(box)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face-neighbour outside it (border of the array = outside)."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, constant_values=False)
    interior = m.copy()
    centre = [slice(1, -1)] * m.ndim
    for axis in range(m.ndim):
        lower, upper = list(centre), list(centre)
        lower[axis] = slice(0, -2)
        upper[axis] = slice(2, None)
        interior &= padded[tuple(lower)]
        interior &= padded[tuple(upper)]
    return m & ~interior


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) ``A -> B`` and ``B -> A``; both masks must be non-empty.

    ``spacing`` is in array order (z, y, x) / (y, x).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} != {b.shape}")
    if len(spacing) != a.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {a.ndim}D masks")
    box = bounding_slices(a | b, margin=1)
    if box is None or not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    # The crop keeps the array border where the masks touch it, so "outside the image is
    # background" still holds for surface voxels there.
    sa = surface_voxels(a[box])
    sb = surface_voxels(b[box])
    sampling = tuple(float(s) for s in spacing)
    dist_to_b = distance_transform_edt(~sb, sampling=sampling)
    dist_to_a = distance_transform_edt(~sa, sampling=sampling)
    return dist_to_b[sa], dist_to_a[sb]


def distance_metrics(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], percentile: float = 95.0
) -> dict[str, float]:
    """``{"hd_percentile", "hd", "assd"}`` in mm for two non-empty masks (see module doc)."""
    d_ab, d_ba = surface_distances(a, b, spacing)
    return {
        "hd_percentile": float(
            max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile))
        ),
        "hd": float(max(d_ab.max(), d_ba.max())),
        "assd": float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size)),
    }


def hausdorff_distance(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float], percentile: float = 95.0
) -> float:
    """Symmetric percentile Hausdorff distance in mm (100 gives the classical maximum)."""
    d_ab, d_ba = surface_distances(a, b, spacing)
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image's diagonal in mm: no surface distance inside it can be larger."""
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))
