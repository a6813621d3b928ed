"""Where patches come from: random or foreground-centred centres, padding, and reading the
region under a (possibly augmented) patch.

Every case is handled as a volume ``(C, Z, Y, X)`` (2D data has ``Z = 1``). A patch is described
in volume coordinates: 3D configurations have a patch ``(pz, py, px)``; 2D and 2.5D
configurations one slice (``pz = 1``) with ``k`` slices read around it (``k = 1`` for 2D). Slices
beyond the first or last are replicated (the edge slice repeated), in-plane beyond the image is
zero.

Spatial augmentation hands :func:`read_patch` the position of every output voxel relative to the
patch centre (``offsets``). Only the bounding box of those positions is read — exactly what this
sample's rotation, zoom and deformation need, not what the largest possible zoom-out would
need — and interpolated there: linearly for images, nearest-neighbour for labels. So rotated and
zoomed-out patches show real image wherever the image has data, and nothing larger than needed
is ever copied or deformed. :func:`augmented_read_size` gives the largest such box over all
settings of a profile (a 224x288 patch rotated by 45 degrees covers a 362x362 square, zoomed
out by 1.4 a 507x507 one).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Interpolation and rounding slack for read sizes, voxels per side: order-3 splines look one
# voxel beyond the sample point, and ceil() may lose half a voxel.
READ_SAFETY = 2

MAX_UNLABELLED_REDRAWS = 10
"""Sparse annotation: a random patch holding no labelled voxel (all 'ignore') teaches nothing
and is drawn again, at most this many times (see :func:`unlabelled_after_redraws`).

A 3D patch spanning at least K slices always holds a labelled one when every K-th slice is
labelled; the redraws are for 2D/2.5D patches, one slice each, labelled with probability 1/K.
With 10 redraws the share of patches still unlabelled is (1 - 1/K)^11: 0.05 % for K = 2, 4 %
for K = 4, 23 % for K = 8 (vs 50 / 75 / 88 % without). The cost is bounded: 11 reads of one
slice's patch, ~1 ms each for 256 x 256 on one core."""


# --------------------------------------------------------------------------- read sizes
def rotated_extent(
    size: Sequence[float], max_angles: Sequence[float], n_steps: int = 13
) -> tuple[float, ...]:
    """Per-axis extent of a box of ``size`` after any rotation within ``max_angles`` (radians).

    2D: one angle (in-plane). 3D: one angle per axis, composed as batchgenerators composes
    them (about axis 0, then 1, then 2), each drawn independently in ``[-a, a]``. The maximum is
    taken over a grid of angles (13 per axis, plus the exact in-range optimum for 2D); between
    grid points the extent changes by less than ``(step^2 / 8) * diagonal`` = 0.1 voxel for
    a 30-degree range and a 200-voxel diagonal, covered by :data:`READ_SAFETY`.
    """
    size = np.asarray(size, dtype=float)
    dim = len(size)
    half = size / 2.0
    corners = np.array(np.meshgrid(*[[-h, h] for h in half], indexing="ij")).reshape(dim, -1).T
    if dim == 2:
        a = abs(float(max_angles[0]))
        angles = np.linspace(-a, a, 721)
        # the extent along each axis peaks where tan(theta) = other side / this side
        extra = [math.atan2(size[1], size[0]), math.atan2(size[0], size[1])]
        angles = np.concatenate(
            [angles, [t for t in extra if t <= a], [-t for t in extra if t <= a]]
        )
        mats = np.stack([_rot2(t) for t in angles])
    elif dim == 3:
        grids = [np.linspace(-abs(a), abs(a), n_steps) for a in max_angles]
        mats = np.stack(
            [
                _rot3(0, ax) @ _rot3(1, ay) @ _rot3(2, az)
                for ax in grids[0]
                for ay in grids[1]
                for az in grids[2]
            ]
        )
    else:
        raise ValueError(f"patch must have 2 or 3 axes, got {dim}")
    # points p map to p @ M (row vectors), as in the library's coordinate rotation
    moved = np.einsum("nd,mde->mne", corners, mats)
    extent = 2.0 * np.abs(moved).max(axis=(0, 1))
    return tuple(float(e) for e in np.maximum(extent, size))


def _rot2(t: float) -> np.ndarray:
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s], [s, c]])


def _rot3(axis: int, t: float) -> np.ndarray:
    c, s = math.cos(t), math.sin(t)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m  # the sign convention is irrelevant: angles are drawn symmetrically


def elastic_displacement_bound(alpha: float, sigma: float, dim: int, n_std: float = 4.0) -> float:
    """Largest displacement (voxels) an elastic field of magnitude ``alpha`` and smoothness
    ``sigma`` produces, with ``n_std`` standard deviations of headroom.

    The field is uniform noise in [-1, 1] (std 1/sqrt(3)) smoothed by a Gaussian of ``sigma``
    and multiplied by ``alpha``. A normalised Gaussian kernel keeps a fraction
    ``(2 sqrt(pi) sigma)^(-dim/2)`` of white-noise standard deviation, so the displacement std
    is ``alpha / sqrt(3) / (2 sqrt(pi) sigma)^(dim/2)``. Four std bound the maximum over a patch
    (a 20x128x128 patch holds ~(128/10)^2 x 2 = 330 independent blobs; the largest of 330
    normal draws exceeds 4 std with probability ~1 %, and then by a fraction of a voxel).
    """
    if alpha <= 0:
        return 0.0
    std = alpha / math.sqrt(3.0) / (2.0 * math.sqrt(math.pi) * sigma) ** (dim / 2.0)
    return n_std * std


def augmented_read_size(
    patch: Sequence[int],
    max_angles: Sequence[float],
    max_zoom_out: float,
    elastic_margin: float = 0.0,
) -> tuple[int, ...]:
    """Largest region spatial augmentation can sample from: the worst case over all settings
    (the loader reads each sample's own, usually much smaller, box; see :func:`read_patch`).

    The augmentation maps each output voxel to ``scale * R @ (p + elastic)``: elastic first,
    then rotation, then scaling about the centre. So the region is the rotated extent of the
    patch grown by the elastic margin on every side, times the largest coordinate scale
    (``max_zoom_out`` >= 1 means the patch shows a larger area). The result keeps
    ``read - patch`` even so that the patch sits exactly in the middle (no half-voxel shift when
    no transform is drawn).
    """
    patch = [int(p) for p in patch]
    # sample points span (p - 1) voxels; grow by the elastic margin on both sides
    span = [p - 1 + 2.0 * elastic_margin for p in patch]
    ext = rotated_extent(span, max_angles)
    zoom = max(1.0, float(max_zoom_out))
    out = []
    for p, e in zip(patch, ext):
        r = math.ceil(e * zoom) + 1 + 2 * READ_SAFETY
        r = max(r, p)
        if (r - p) % 2:
            r += 1
        out.append(r)
    return tuple(out)


# --------------------------------------------------------------------------- centres
def random_start(
    lo: int, hi: int, size: int, rng: np.random.Generator, centred: bool = False
) -> int:
    """Start of a window of ``size`` placed at random in the region ``[lo, hi)``.

    A region at least as large as the window holds it entirely (uniform over all positions);
    a smaller region is placed at a random offset inside the window (``centred``: in its
    middle), which pads the rest.
    """
    room = (hi - lo) - size
    if centred and room < 0:
        return lo + room // 2
    a, b = lo + min(0, room), lo + max(0, room)
    return int(rng.integers(a, b + 1))


def foreground_voxel(
    locations: dict[int, np.ndarray],
    rng: np.random.Generator,
    lo: Sequence[int] | None = None,
    hi: Sequence[int] | None = None,
) -> tuple[int, int, int] | None:
    """A random voxel of a random foreground label present in the case (labels equally likely,
    so a rare label is centred on as often as a common one); None without foreground.

    With ``lo``/``hi`` only voxels inside that box count (crop windows)."""
    candidates = []
    for label in sorted(locations):
        pts = locations[label]
        if lo is not None and hi is not None and len(pts):
            inside = np.all((pts >= np.asarray(lo)) & (pts < np.asarray(hi)), axis=1)
            pts = pts[inside]
        if len(pts):
            candidates.append(pts)
    if not candidates:
        return None
    pts = candidates[int(rng.integers(len(candidates)))]
    z, y, x = pts[int(rng.integers(len(pts)))]
    return int(z), int(y), int(x)


def jitter_voxels(
    jitter_mm: float, spacing: Sequence[float] | None, ndim: int = 3
) -> tuple[int, ...]:
    """Maximum jitter per axis in voxels for ``jitter_mm`` (1 mm voxels when spacing is unknown).

    4 mm is the default: a localiser working on a 2-4x coarser grid misses the nerve centre by
    about one coarse voxel (1-3 mm in-plane), and the median nerve is ~5 mm wide.
    """
    sp = [1.0] * ndim if spacing is None else [float(s) for s in spacing]
    return tuple(int(math.floor(jitter_mm / s)) if s > 0 else 0 for s in sp)


def crop_window_centre(
    fg_min: int, fg_max: int, window: int, jitter: int, rng: np.random.Generator
) -> int:
    """Centre of a crop window along one axis for foreground spanning ``[fg_min, fg_max]``.

    The window is centred on the middle of the foreground's extent (what a localiser that
    finds the structure's bounding box would give at inference); when the structure is longer
    than the window (a nerve running through all slices) the centre is drawn uniformly along
    the structure instead, so every part of it is seen in training. Then a uniform integer
    jitter in ``[-jitter, jitter]`` mimics localisation error.
    """
    length = fg_max - fg_min + 1
    if length <= window:
        centre = (fg_min + fg_max + 1) // 2
    else:
        centre = int(rng.integers(fg_min + window // 2, fg_max + 1 - (window - window // 2) + 1))
    if jitter > 0:
        centre += int(rng.integers(-jitter, jitter + 1))
    return centre


# --------------------------------------------------------------------------- reading
def extract_region(
    arr: np.ndarray,
    lo: Sequence[int],
    size: Sequence[int],
    valid_lo: Sequence[int] | None = None,
    valid_hi: Sequence[int] | None = None,
    replicate_axes: Sequence[int] = (),
    pad_value: float = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Copy of the box ``[lo, lo + size)`` over the last three axes of ``arr``; leading axes
    (channels) are kept whole.

    Only ``[valid_lo, valid_hi)`` (default: the whole array) counts as image: outside it,
    ``replicate_axes`` repeat the edge (the neighbouring-slice stack of 2.5D at the first and
    last slice), other axes get ``pad_value``. Reads only the needed part of a memory map.
    ``out`` (right shape, any dtype) is filled instead of a new array, saving a batch copy.
    """
    shape = arr.shape[-3:]
    lead = arr.shape[:-3]
    vlo = [0, 0, 0] if valid_lo is None else [max(0, int(v)) for v in valid_lo]
    vhi = list(shape) if valid_hi is None else [min(s, int(v)) for s, v in zip(shape, valid_hi)]
    src: list[slice] = []
    dst: list[slice] = []
    take: list[tuple[int, np.ndarray]] = []
    empty = False
    for ax in range(3):
        a, n = int(lo[ax]), int(size[ax])
        if ax in replicate_axes and (a < vlo[ax] or a + n > vhi[ax]):
            idx = np.clip(np.arange(a, a + n), vlo[ax], vhi[ax] - 1)
            first = int(idx.min())
            src.append(slice(first, int(idx.max()) + 1))
            dst.append(slice(0, n))
            take.append((ax, idx - first))
            continue
        s0, s1 = max(a, vlo[ax]), min(a + n, vhi[ax])
        if s1 <= s0:
            empty = True  # nothing of the image in the box
            break
        src.append(slice(s0, s1))
        dst.append(slice(s0 - a, s1 - a))
    # pad only where the image does not cover the box (usually it does)
    covered = not empty and all(d.stop - d.start == int(n) for d, n in zip(dst, size))
    if out is None:
        full_shape = lead + tuple(int(s) for s in size)
        out = (
            np.empty(full_shape, arr.dtype)
            if covered
            else np.full(full_shape, pad_value, arr.dtype)
        )
    elif not covered:
        out[...] = pad_value
    if empty:
        return out
    block = np.asarray(arr[(Ellipsis, *src)])
    for ax, idx in take:
        block = np.take(block, idx, axis=block.ndim - 3 + ax)
    out[(Ellipsis, *dst)] = block
    return out


@dataclass(frozen=True)
class PatchGeometry:
    """How one configuration samples, in volume coordinates ``(z, y, x)``.

    ``patch``: final patch (``pz = 1`` for 2D/2.5D); ``read``: the unaugmented region under it
    (``(k, py, px)`` in slice mode, the patch otherwise; spatial augmentation reads the box its
    sample positions need instead); ``window``: crop window (None: no crop; a ``None`` entry:
    whole extent along that axis); ``jitter``: crop jitter in voxels.
    """

    patch: tuple[int, int, int]
    read: tuple[int, int, int]
    slice_mode: bool  # 2D/2.5D: one slice, neighbours replicated at the volume ends
    window: tuple[int | None, int | None, int | None] | None = None
    jitter: tuple[int, int, int] = (0, 0, 0)


@dataclass
class Patch:
    """One sampled patch: image ``(C, k or pz, py, px)`` float32 and labels ``(1 or pz, py, px)``
    uint8 (slice mode: the centre slice's labels only), and whether it was foreground-centred."""

    case_id: str
    data: np.ndarray
    seg: np.ndarray
    centre: tuple[int, int, int]
    forced_foreground: bool


def choose_centre(
    shape: Sequence[int],
    geom: PatchGeometry,
    locations: dict[int, np.ndarray],
    rng: np.random.Generator,
    force_foreground: bool,
) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int], bool]:
    """Centre of the final patch and the valid region ``[vlo, vhi)`` it lives in.

    Returns ``(centre, vlo, vhi, used_foreground)``. Crop configurations first place the crop
    window on the foreground (always, see :func:`crop_window_centre`) and restrict everything
    to it; within the window (or the whole case) the patch is centred on a foreground voxel
    when ``force_foreground`` and the case has one there, else placed uniformly at random.
    """
    shape = [int(s) for s in shape]
    vlo, vhi = [0, 0, 0], list(shape)
    win_lo: list[int] | None = None
    if geom.window is not None:
        fg = [p for p in locations.values() if len(p)]
        pts = np.concatenate(fg) if fg else None
        win_lo, win_hi = [0, 0, 0], list(shape)
        for ax in range(3):
            w = geom.window[ax]
            if w is None or w <= 0:
                continue
            if pts is None:
                c = random_start(0, shape[ax], 1, rng)
            else:
                c = crop_window_centre(
                    int(pts[:, ax].min()), int(pts[:, ax].max()), w, geom.jitter[ax], rng
                )
            win_lo[ax], win_hi[ax] = c - w // 2, c - w // 2 + w
        vlo = [max(0, a) for a in win_lo]
        vhi = [min(s, b) for s, b in zip(shape, win_hi)]
    centre: list[int] | None = None
    used_fg = False
    if force_foreground:
        box = (vlo, vhi) if win_lo is not None else (None, None)
        vox = foreground_voxel(locations, rng, *box)
        if vox is not None:
            centre, used_fg = list(vox), True
    if centre is None:
        centre = []
        for ax in range(3):
            p = geom.patch[ax]
            if win_lo is not None and geom.window[ax]:  # type: ignore[index]
                w = int(geom.window[ax])  # type: ignore[index, arg-type]
                start = random_start(win_lo[ax], win_lo[ax] + w, p, rng, centred=True)
            else:
                start = random_start(vlo[ax], vhi[ax], p, rng)
            centre.append(start + p // 2)
    return (
        (int(centre[0]), int(centre[1]), int(centre[2])),
        (vlo[0], vlo[1], vlo[2]),
        (vhi[0], vhi[1], vhi[2]),
        used_fg,
    )


def read_patch(
    image: np.ndarray,
    seg: np.ndarray,
    centre: Sequence[int],
    geom: PatchGeometry,
    vlo: Sequence[int],
    vhi: Sequence[int],
    out_data: np.ndarray | None = None,
    out_seg: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    flips: Sequence[bool] = (False, False, False),
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(C, k or pz, py, px)`` float32 and labels ``(1 or pz, py, px)`` of the patch at
    ``centre`` (see :class:`PatchGeometry`); ``out_*`` are filled when given.

    In slice mode the ``k`` slices around the centre slice are read (edge slices replicated) and
    the labels of the centre slice only. ``offsets`` (``(d, *patch_d)``, ``d`` = 2: in-plane,
    the same for every slice; ``d`` = 3: the whole patch) are the sample positions of the output
    voxels relative to the patch centre; only the bounding box of those positions (plus the
    voxel linear interpolation reaches beyond them) is read, and interpolated once — images
    linearly, labels nearest-neighbour. None is the unaugmented grid, read without any
    interpolation. ``flips`` reverses the output along volume axes (mirroring).
    """
    zsize = geom.read[0]
    starts = [int(c) - p // 2 for c, p in zip(centre, geom.patch)]
    starts[0] -= (zsize - geom.patch[0]) // 2
    rep = (0,) if geom.slice_mode else ()
    seg_z0, seg_zsize = (int(centre[0]), 1) if geom.slice_mode else (starts[0], zsize)
    c = image.shape[0]
    py, px = geom.patch[1], geom.patch[2]
    if out_data is None:
        out_data = np.empty((c, zsize, py, px), np.float32)
    if out_seg is None:
        out_seg = np.empty((seg_zsize, py, px), np.uint8)
    flips = tuple(bool(f) for f in flips)
    if offsets is None:
        d_view = out_data[(slice(None), *_flip_slices(flips))]
        s_view = out_seg[_flip_slices((False, *flips[1:]) if geom.slice_mode else flips)]
        extract_region(image, starts, (zsize, py, px), vlo, vhi, rep, out=d_view)
        extract_region(seg, (seg_z0, *starts[1:]), (seg_zsize, py, px), vlo, vhi, rep, out=s_view)
        return out_data, out_seg
    d = offsets.shape[0]
    first = 3 - d  # volume axis of offsets[0]
    for k in range(d):  # mirroring an axis of the warp = reading its sample positions backwards
        if flips[first + k]:
            offsets = np.flip(offsets, axis=1 + k)
    centres = np.array([s + (p - 1) / 2.0 for s, p in zip(starts[first:], geom.patch[first:])])
    pos = offsets.reshape(d, -1).astype(np.float64) + centres[:, None]
    lo = np.floor(pos.min(axis=1)).astype(int)
    hi = np.floor(pos.max(axis=1)).astype(int) + 2  # linear interpolation reads floor + 1
    local = (pos - lo[:, None]).astype(np.float32)
    box_lo, box_size = [*starts[:first], *lo], [*(zsize,)[:first], *(hi - lo)]
    seg_lo = [seg_z0, *box_lo[1:]] if d == 2 else box_lo
    seg_size = [seg_zsize, *box_size[1:]] if d == 2 else box_size
    region = scratch("region", (c, *box_size), np.float32)
    labels = scratch("labels", seg_size, seg.dtype)
    # an in-plane warp leaves the slice axis to the flip: store the slices reversed
    z_flip = d == 2 and flips[0]
    extract_region(
        image, box_lo, box_size, vlo, vhi, rep, out=region[:, ::-1] if z_flip else region
    )
    seg_out = labels[::-1] if z_flip and not geom.slice_mode else labels
    extract_region(seg, seg_lo, seg_size, vlo, vhi, rep, out=seg_out)
    n_out = out_data.size // local.shape[1]
    direct = out_data.flags.c_contiguous
    values = interpolate_linear(
        region.reshape(-1, *region.shape[-d:]),
        local,
        out=out_data.reshape(n_out, -1) if direct else None,
    )
    if not direct:
        out_data[...] = values.reshape(out_data.shape)
    out_seg[...] = interpolate_nearest(labels.reshape(-1, *labels.shape[-d:]), local).reshape(
        out_seg.shape
    )
    return out_data, out_seg


_SCRATCH = threading.local()


def scratch(name: str, shape: Sequence[int], dtype: Any) -> np.ndarray:
    """A reusable work array of ``shape`` (contents undefined), one per ``name`` and thread.

    Freshly allocated multi-megabyte arrays cost page faults on first touch; in the VM we
    measured, those were a third of the batch time. Users finish with an array before they
    return, so one per name and thread is enough."""
    buffers: dict[str, np.ndarray] = _SCRATCH.__dict__.setdefault("buffers", {})
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = buffers.get(name)
    if buf is None or buf.dtype != dtype or buf.size < n:
        buf = np.empty(max(n, 1), dtype)
        buffers[name] = buf
    return buf[:n].reshape(tuple(int(v) for v in shape))


def clear_scratch() -> None:
    """Free this thread's work arrays of :func:`scratch` (a closed loader calls this)."""
    _SCRATCH.__dict__.pop("buffers", None)


def _flip_slices(flips: Sequence[bool]) -> tuple[slice, ...]:
    return tuple(slice(None, None, -1) if f else slice(None) for f in flips)


def _corner_indices(
    shape: Sequence[int], coords: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Flat index of the lower corner of every point's cell, the weights of the upper
    neighbours along each axis, and the flat strides (see :func:`interpolate_linear`)."""
    d = coords.shape[0]
    strides = [int(np.prod(shape[ax + 1 :])) for ax in range(d)]
    base = np.zeros(coords.shape[1], np.intp)
    weights = []
    for ax in range(d):
        i0 = np.floor(coords[ax])
        # clipping only guards against rounding at the box edge (the box holds floor + 1)
        np.clip(i0, 0, shape[ax] - 2, out=i0)
        w = coords[ax] - i0
        np.clip(w, 0.0, 1.0, out=w)
        base += i0.astype(np.intp) * strides[ax]
        weights.append(w.astype(np.float32, copy=False))
    return base, weights, strides


def interpolate_linear(
    region: np.ndarray, coords: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Multilinear interpolation of every leading slab of ``region`` (``(M, *S)``, ``d`` =
    len(S) spatial axes) at ``coords`` (``(d, N)``, in voxels of ``S``) -> ``(M, N)`` float32
    (into ``out`` when given).

    The points must lie inside ``[0, S - 1]`` — :func:`read_patch` reads exactly that box. The
    weights and indices are computed once per point and shared by all ``M`` slabs (channels,
    and the slices of an in-plane warp): 2^d gathers and multiply-adds, about 5x faster than
    ``scipy.ndimage.map_coordinates`` slice by slice (2.7 vs 12 ms for 24 slices of 160x160).
    """
    d = coords.shape[0]
    shape = region.shape[1:]
    flat = region.reshape(region.shape[0], -1)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    if out is None:
        out = np.empty((flat.shape[0], coords.shape[1]), np.float32)
    term = scratch("interpolation", out.shape, np.float32)
    base, weights, strides = _corner_indices(shape, coords)
    for corner in range(2**d):
        bits = [(corner >> (d - 1 - ax)) & 1 for ax in range(d)]
        w = np.ones(1, np.float32)
        idx = base
        for ax, bit in enumerate(bits):
            w = w * (weights[ax] if bit else 1.0 - weights[ax])
            if bit:
                idx = idx + strides[ax]
        if corner == 0:
            np.take(flat, idx, axis=1, out=out)
            out *= w
        else:
            np.take(flat, idx, axis=1, out=term)
            term *= w
            out += term
    return out


def interpolate_nearest(region: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Nearest-neighbour values of every leading slab of ``region`` at ``coords`` (as
    :func:`interpolate_linear`; the dtype is kept, so labels stay labels)."""
    d = coords.shape[0]
    shape = region.shape[1:]
    idx = np.zeros(coords.shape[1], np.intp)
    for ax in range(d):
        i = np.rint(coords[ax])
        np.clip(i, 0, shape[ax] - 1, out=i)
        idx += i.astype(np.intp) * int(np.prod(shape[ax + 1 :]))
    return np.take(region.reshape(region.shape[0], -1), idx, axis=1)


def sample_patch(
    case_id: str,
    image: np.ndarray,
    seg: np.ndarray,
    locations: dict[int, np.ndarray],
    geom: PatchGeometry,
    rng: np.random.Generator,
    force_foreground: bool,
    out_data: np.ndarray | None = None,
    out_seg: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    flips: Sequence[bool] = (False, False, False),
    ignore_label: int | None = None,
    max_redraws: int = MAX_UNLABELLED_REDRAWS,
) -> Patch:
    """Choose a centre in one case and read the (warped, when ``offsets`` are given) patch
    there (into ``out_*`` when given: ``(C, k or pz, py, px)`` float32 and ``(1 or pz, py, px)``
    uint8).

    ``ignore_label`` (sparse annotation): its voxels are never foreground centres, and a patch
    whose labels are all ``ignore_label`` is drawn again, up to ``max_redraws`` times
    (:data:`MAX_UNLABELLED_REDRAWS`); the last draw is kept whatever it holds."""
    if ignore_label is not None:
        locations = {k: v for k, v in locations.items() if int(k) != ignore_label}
    for attempt in range(max(0, int(max_redraws)) + 1):
        centre, vlo, vhi, used = choose_centre(
            image.shape[1:], geom, locations, rng, force_foreground
        )
        data, labels = read_patch(
            image, seg, centre, geom, vlo, vhi, out_data, out_seg, offsets, flips
        )
        out_data, out_seg = data, labels
        if ignore_label is None or attempt == max_redraws or not _all_equal(labels, ignore_label):
            break
    return Patch(case_id, data, labels, centre, used)


def unlabelled_after_redraws(every: int, redraws: int = MAX_UNLABELLED_REDRAWS) -> float:
    """Share of one-slice random patches still unlabelled when every ``every``-th slice is
    labelled and unlabelled draws are repeated ``redraws`` times: ``(1 - 1/every)^(redraws+1)``."""
    return (1.0 - 1.0 / every) ** (redraws + 1)


def _all_equal(labels: np.ndarray, value: int) -> bool:
    return bool(labels.size) and not bool(np.any(labels != value))
