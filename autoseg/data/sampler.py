"""Where patches come from: random or foreground-centred centres, enlarged reads, padding.

Every case is handled as a volume ``(C, Z, Y, X)`` (2D data has ``Z = 1``). A patch is described
in volume coordinates:

- 3D configurations: the patch ``(pz, py, px)``; the region read around it is larger by the
  margin that spatial augmentation needs (:func:`augmented_read_size`), except along the thick
  axis of anisotropic data, which spatial augmentation does not touch.
- 2D and 2.5D configurations: one slice (``pz = 1``); the region read is ``k`` slices
  (``k = 1`` for 2D) around it by the enlarged in-plane size. Slices beyond the first or last
  are replicated (the edge slice repeated), in-plane beyond the image is zero.

Reading more than the final patch is what keeps rotated and zoomed-out patches free of
artificial padding: a 224x288 patch rotated by 45 degrees covers a 362x362 square, and zooming
out by 1.4 a 507x507 one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Interpolation and rounding slack for read sizes, voxels per side: order-3 splines look one
# voxel beyond the sample point, and ceil() may lose half a voxel.
READ_SAFETY = 2


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
    """Size of the region to read so that spatial augmentation never samples outside it.

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
    if out is None:
        out = np.full(lead + tuple(int(s) for s in size), pad_value, dtype=arr.dtype)
    else:
        out[...] = pad_value
    src: list[slice] = []
    dst: list[slice] = []
    take: list[tuple[int, np.ndarray]] = []
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
            return out  # nothing of the image in the box
        src.append(slice(s0, s1))
        dst.append(slice(s0 - a, s1 - a))
    block = np.asarray(arr[(Ellipsis, *src)])
    for ax, idx in take:
        block = np.take(block, idx, axis=block.ndim - 3 + ax)
    out[(Ellipsis, *dst)] = block
    return out


@dataclass(frozen=True)
class PatchGeometry:
    """How one configuration samples, in volume coordinates ``(z, y, x)``.

    ``patch``: final patch (``pz = 1`` for 2D/2.5D); ``read``: region read before spatial
    augmentation (``k`` slices for 2.5D); ``window``: crop window (None: no crop; a ``None``
    entry: whole extent along that axis); ``jitter``: crop jitter in voxels.
    """

    patch: tuple[int, int, int]
    read: tuple[int, int, int]
    slice_mode: bool  # 2D/2.5D: one slice, neighbours replicated at the volume ends
    window: tuple[int | None, int | None, int | None] | None = None
    jitter: tuple[int, int, int] = (0, 0, 0)


@dataclass
class Patch:
    """One sampled region: image ``(C, rz, ry, rx)`` float32 and labels ``(sz, ry, rx)`` uint8
    (``sz = 1`` in slice mode: the centre slice only), and whether it was foreground-centred."""

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
) -> tuple[np.ndarray, np.ndarray]:
    """Image and label blocks of the read region around ``centre`` (see :class:`PatchGeometry`).

    In slice mode the ``k`` slices around the centre slice are read (edge slices replicated)
    and the labels of the centre slice only. ``out_*`` are filled when given."""
    lo = [int(c) - p // 2 - (r - p) // 2 for c, p, r in zip(centre, geom.patch, geom.read)]
    if geom.slice_mode:
        data = extract_region(image, lo, geom.read, vlo, vhi, replicate_axes=(0,), out=out_data)
        seg_lo = [int(centre[0]), lo[1], lo[2]]
        size = (1, geom.read[1], geom.read[2])
        labels = extract_region(seg, seg_lo, size, vlo, vhi, replicate_axes=(0,), out=out_seg)
    else:
        data = extract_region(image, lo, geom.read, vlo, vhi, out=out_data)
        labels = extract_region(seg, lo, geom.read, vlo, vhi, out=out_seg)
    return data.astype(np.float32, copy=False), labels


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
) -> Patch:
    """Choose a centre in one case and read the (enlarged) region around it (into ``out_*``
    when given: ``(C, *read)`` float32 and ``(sz, ry, rx)``)."""
    centre, vlo, vhi, used = choose_centre(image.shape[1:], geom, locations, rng, force_foreground)
    data, labels = read_patch(image, seg, centre, geom, vlo, vhi, out_data, out_seg)
    return Patch(case_id, data, labels, centre, used)
