"""Cropping to the non-zero region and pasting back.

Scanners and converters pad with exact zeros (MRI outside the body after masking, the black
bands of ultrasound frames, skull-stripped brains). Those voxels carry no information, cost
memory and time in every later stage, and would bias per-image z-scoring, so every case is
cut to the box around its non-zero voxels. A box is a list of ``(start, stop)`` per axis in
array order, half-open like Python slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BBox = list[tuple[int, int]]


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any channel of a (C, Z, Y, X) image is non-zero."""
    return np.any(image != 0, axis=0)


def bounding_box(mask: np.ndarray) -> BBox:
    """Half-open box around the True voxels; the full extent when there are none.

    An all-zero image keeps its full extent rather than becoming empty, so every later stage
    sees at least the original grid.
    """
    box: BBox = []
    for axis in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != axis)
        hit = np.flatnonzero(np.any(mask, axis=others)) if others else np.flatnonzero(mask)
        if hit.size == 0:
            return [(0, n) for n in mask.shape]
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return box


def crop(array: np.ndarray, bbox: Sequence[Sequence[int]]) -> np.ndarray:
    """Cut the last ``len(bbox)`` axes of ``array`` to the box (leading axes are channels)."""
    lead = (slice(None),) * (array.ndim - len(bbox))
    return array[lead + tuple(slice(int(a), int(b)) for a, b in bbox)]


def paste(
    array: np.ndarray,
    bbox: Sequence[Sequence[int]],
    shape: Sequence[int],
    fill: float | Sequence[float] = 0,
) -> np.ndarray:
    """Place a cropped array back into an array of spatial ``shape``: the inverse of :func:`crop`.

    ``fill`` is the value outside the box; a sequence gives one value per leading channel
    (class probabilities: 1 for background, 0 for the others).
    """
    n_lead = array.ndim - len(bbox)
    lead_shape = array.shape[:n_lead]
    expected = tuple(int(b) - int(a) for a, b in bbox)
    if tuple(array.shape[n_lead:]) != expected:
        raise ValueError(f"array shape {array.shape} does not fit box {list(bbox)}")
    out = np.empty(lead_shape + tuple(int(n) for n in shape), dtype=array.dtype)
    if np.ndim(fill) == 0:
        out[...] = fill
    else:
        fill_arr = np.asarray(fill, dtype=array.dtype)
        out[...] = fill_arr.reshape(fill_arr.shape + (1,) * len(bbox))
    out[(slice(None),) * n_lead + tuple(slice(int(a), int(b)) for a, b in bbox)] = array
    return out


def crop_to_nonzero(
    image: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, BBox]:
    """Crop a (C, Z, Y, X) image (and its labels) to the non-zero region.

    The box also covers every labelled voxel, so an annotation that strays into zero padding
    is never cut off (it would otherwise be lost in training and in the round trip).
    """
    mask = nonzero_mask(image)
    if seg is not None and np.any(seg):
        mask = mask | (seg != 0)
    box = bounding_box(mask)
    return crop(image, box), (None if seg is None else crop(seg, box)), box
