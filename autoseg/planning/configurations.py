"""Which configurations to train, and their configuration-specific numbers.

- 2D data: ``2d`` only.
- 3D data: ``2d``, ``2.5d``, ``3d_fullres``; ``3d_lowres`` when the full-resolution patch covers
  less than a quarter of the median image; ``crop`` for tiny structures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from autoseg.planning.topology import fit_topology

CONFIGS_2D_DATA = ("2d",)
CONFIGS_3D_DATA = ("2d", "2.5d", "3d_fullres", "3d_lowres", "crop")

# 2.5D context: at least one neighbour on each side (k = 3), at most three (k = 7): beyond
# ~7 slices the input channels of a 2D network stop adding usable context and just add noise.
MIN_CONTEXT_SLICES = 3
MAX_CONTEXT_SLICES = 7

# nnU-Net: a low-resolution stage pays when the full-resolution patch sees < 25 % of the median
# image; its spacing grows in 1 % steps until the patch covers >= 25 % of the (smaller) image.
LOWRES_COVERAGE = 0.25
LOWRES_STEP = 1.01
# ... and it is dropped unless its median image has at most half the full-resolution voxels.
LOWRES_MIN_REDUCTION = 2.0
# nnU-Net's spacing ratio below which axes are treated as "in-plane" partners.
IN_PLANE_RATIO = 2.0

# crop: only for structures below 1 % of the voxels (the sciatic nerve is 0.1-0.2 %).
CROP_MAX_FOREGROUND_FRACTION = 0.01
# window = 3 x the p95 foreground extent: the structure plus one own width of context on each
# side; a 12 mm nerve -> the 36 x 36 mm window of the sciatic-nerve MRN study.
CROP_CONTEXT_FACTOR = 3.0
# ... at least 32 voxels per axis (three poolings down to 4) where the image is that large ...
CROP_MIN_VOXELS = 32
# ... and only when the window is at most half of the median image (else cropping saves little).
CROP_MAX_WINDOW_FRACTION = 0.5
# Coarse localiser for the crop, in order of preference.
LOCALISER_PREFERENCE = ("3d_lowres", "2d", "3d_fullres")


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def candidate_configurations(dim: int) -> tuple[str, ...]:
    """Configurations considered for 2D / 3D data (the rest decide by their own rules)."""
    return CONFIGS_2D_DATA if dim == 2 else CONFIGS_3D_DATA


def slice_axis(thick: int | None) -> int:
    """2D / 2.5D slices cut across the thick axis (the acquisition's slices), else axis 0."""
    return 0 if thick is None else int(thick)


def context_slices(
    extents_mm: Sequence[Sequence[float] | None],
    axis: int,
    slice_spacing: float,
    n_slices: int,
) -> tuple[int, str]:
    """k, the number of neighbouring slices the 2.5D network sees (centre slice included).

    The context reaches half a structure's size above and below the centre slice, so a
    structure's cross-section is followed over about one of its own widths:
    ``k = 2 * floor(size / (2 * slice spacing)) + 1`` with size = min(in-plane extent, extent
    along the slice axis) of the label's median bounding box (the nerve is a tube: its
    in-plane width is what matters; a blob shorter than it is limited by its length). The
    largest k over the labels, clamped to 3..7 and to the number of slices.
    Sciatic nerve, ~14 mm wide: 3 mm slices -> k = 5; 4.4 mm slices -> k = 3.
    """
    sizes = []
    for ext in extents_mm:
        if ext is None:
            continue
        in_plane = max(e for a, e in enumerate(ext) if a != axis)
        sizes.append(min(in_plane, ext[axis]))
    limit = n_slices if n_slices % 2 else n_slices - 1
    if not sizes:
        k = min(MIN_CONTEXT_SLICES, max(limit, 1))
        return k, f"no foreground extent in the fingerprint -> k = {k}"
    size = max(sizes)
    raw = 2 * math.floor(size / (2 * slice_spacing)) + 1
    k = max(MIN_CONTEXT_SLICES, min(MAX_CONTEXT_SLICES, raw))
    k = max(1, min(k, limit))
    return k, (
        f"structure size {size:.3g} mm (median extent) / slice spacing {slice_spacing:.3g} mm "
        f"-> 2*floor({size:.3g}/(2*{slice_spacing:.3g}))+1 = {raw}, clamped to "
        f"[{MIN_CONTEXT_SLICES}, {MAX_CONTEXT_SLICES}] and {n_slices} slices -> k = {k}"
    )


def lowres_step(spacing: Sequence[float], factor: float = LOWRES_STEP) -> list[float]:
    """One step of spacing growth for the low-resolution configuration.

    Only axes finer than half the coarsest spacing grow (in-plane first: a 0.75 x 0.75 x 3 mm
    image is not coarsened along z until in-plane has reached 1.5 mm); once every axis is within
    2x of the coarsest, all grow together.
    """
    coarsest = max(spacing)
    fine = [coarsest / s > IN_PLANE_RATIO for s in spacing]
    if not any(fine):
        fine = [True] * len(spacing)
    return [s * factor if f else s for s, f in zip(spacing, fine)]


def lowres_spacing(spacing: Sequence[float], steps: int) -> list[float]:
    """The spacing after ``steps`` applications of :func:`lowres_step`."""
    current = [float(s) for s in spacing]
    for _ in range(steps):
        current = lowres_step(current)
    return current


def lowres_steps(coverage_at: Callable[[int], float], max_steps: int = 1024) -> int | None:
    """The smallest number of :func:`lowres_step` steps at which ``coverage_at(steps)`` (the
    planned patch's share of the median image at that spacing) reaches 25 %, or None.

    nnU-Net walks the 1.01 steps one by one, re-planning the patch each time; coverage only
    grows as the image shrinks, so doubling then bisection finds the same step with ~2 log2(n)
    patch plans (each of which runs the real network's memory estimate).
    """
    low, high = 0, 1
    while coverage_at(high) < LOWRES_COVERAGE:
        low, high = high, high * 2
        if high > max_steps:
            return None
    while high - low > 1:
        mid = (low + high) // 2
        if coverage_at(mid) >= LOWRES_COVERAGE:
            high = mid
        else:
            low = mid
    return high


def patch_coverage(patch: Sequence[int], median_shape: Sequence[int]) -> float:
    """Fraction of the median image volume one patch covers (capped at 1)."""
    return min(1.0, math.prod(patch) / math.prod(median_shape))


def needs_lowres(patch: Sequence[int], median_shape: Sequence[int]) -> tuple[bool, str]:
    """A low-resolution configuration is planned when the full-resolution patch covers less
    than 25 % of the median image (nnU-Net): then no patch sees the whole anatomy and a coarse
    stage adds the missing global context."""
    cov = patch_coverage(patch, median_shape)
    verdict = cov < LOWRES_COVERAGE
    return verdict, (
        f"3d_fullres patch {_fmt(patch)} covers {100 * cov:.0f} % of the median image "
        f"{_fmt(median_shape)} ({'<' if verdict else '>='} {100 * LOWRES_COVERAGE:.0f} %)"
    )


def foreground_extent_p95(extents: Sequence[Sequence[float] | None]) -> list[float] | None:
    """Per-axis 95th percentile of the per-case extents of all foreground (cases without
    foreground left out); None when no case has foreground."""
    present = [e for e in extents if e is not None]
    if not present:
        return None
    return [float(v) for v in np.percentile(np.asarray(present, dtype=float), 95, axis=0)]


def divisible_window(
    window: Sequence[int], spacing: Sequence[float], limit: Sequence[int]
) -> list[int]:
    """The window rounded *up* (at most to ``limit``, the median image) until it is divisible
    by the total stride of its own network, so that the patch can be the whole window instead
    of losing its margins to rounding down (46 -> 48 voxels for a 3-pooling axis)."""
    current = [int(w) for w in window]
    for _ in range(16):
        rounded, topo = fit_topology(spacing, current)
        if rounded == current:
            break
        up = [min(-(-w // d) * d, m) for w, d, m in zip(current, topo.divisor, limit)]
        if up == current:
            break
        current = up
    return current


def crop_window(
    extent_p95_mm: Sequence[float], spacing: Sequence[float], median_shape: Sequence[int]
) -> tuple[list[float], list[int], str]:
    """(window in mm, window in voxels at ``spacing``, why).

    Window per axis = 3 x the p95 extent of all foreground (the structure plus one own width
    of context on each side, which also absorbs the coarse localiser's error), at least
    32 voxels, at most the median image, then rounded up to the network's total stride
    (:func:`divisible_window`). A tubular nerve spanning the whole stack gets the whole stack
    along z. Sciatic nerve, p95 extent ~11.4 mm at 0.75 mm: 46 -> 48 voxels = 36 mm.
    """
    wanted = []
    for e, s, m in zip(extent_p95_mm, spacing, median_shape):
        vox = math.ceil(CROP_CONTEXT_FACTOR * e / s)
        wanted.append(int(min(max(vox, CROP_MIN_VOXELS), m)))
    window_vox = divisible_window(wanted, spacing, median_shape)
    window_mm = [round(v * s, 3) for v, s in zip(window_vox, spacing)]
    why = (
        f"{CROP_CONTEXT_FACTOR:g} x p95 foreground extent {_fmt(extent_p95_mm)} mm, >= "
        f"{CROP_MIN_VOXELS} voxels, <= median image {_fmt(median_shape)} -> {_fmt(wanted)} "
        f"voxels, rounded up to the total stride -> window {_fmt(window_vox)} voxels = "
        f"{_fmt(window_mm)} mm at {_fmt(spacing)} mm"
    )
    return window_mm, window_vox, why


def wants_crop(
    foreground_fraction: float, window_voxels: Sequence[int], median_shape: Sequence[int]
) -> tuple[bool, str]:
    """Plan ``crop`` when the median foreground fraction is < 1 % and the window is at most
    half the median image: then most voxels of a full-image patch are irrelevant background,
    and the crop both balances the classes and lets the patch be at full resolution."""
    share = math.prod(window_voxels) / math.prod(median_shape)
    tiny = foreground_fraction < CROP_MAX_FOREGROUND_FRACTION
    small = share <= CROP_MAX_WINDOW_FRACTION
    why = (
        f"median foreground fraction {100 * foreground_fraction:.3g} % "
        f"({'<' if tiny else '>='} {100 * CROP_MAX_FOREGROUND_FRACTION:g} %), window "
        f"{100 * share:.0f} % of the median image "
        f"({'<=' if small else '>'} {100 * CROP_MAX_WINDOW_FRACTION:.0f} %)"
    )
    return tiny and small, why


def choose_localiser(available: Sequence[str]) -> tuple[str | None, str]:
    """The configuration whose prediction centres the crop window at inference: ``3d_lowres``
    (whole-volume context, cheap) if planned, else ``2d`` (whole slices in one pass, the
    cheapest full-field view), else ``3d_fullres``."""
    for name in LOCALISER_PREFERENCE:
        if name in available:
            return name, f"first planned of {', '.join(LOCALISER_PREFERENCE)}: {name}"
    return None, f"none of {', '.join(LOCALISER_PREFERENCE)} is planned"
