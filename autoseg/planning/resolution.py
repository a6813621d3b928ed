"""Coarser training grids for short time budgets: how far a configuration may be coarsened.

A network's step time follows its voxel count, so a grid twice as coarse in-plane trains about
four times as many iterations in the same time. What it costs is measured in the fingerprint
(:func:`autoseg.fingerprint.extract.coarsening_dice`): the Dice the reference masks themselves
keep after a round trip to the coarser grid — an upper bound of what a perfect network could
reach there. The budget planner (:mod:`autoseg.planning.budget`) offers the grids up to the
coarsest one that keeps enough as rungs of its ladder, before narrower networks and smaller
patches; a grid on which a structure's median cross-section spans fewer than
:data:`MIN_CROSS_SECTION_PX` pixels only when nothing else reaches the iteration target.
Predictions are resampled back to the input grid (linear on the probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from autoseg.fingerprint.schema import CaseFingerprint
from autoseg.planning.patch import fine_axes

# Coarsening factors the ladder may take, finest first (the fingerprint measures these).
FACTORS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
# A factor is allowed when, for every foreground label, the reference masks keep on average at
# least this Dice after the round trip, and the worst tenth of the cases at least P10_MIN.
# usgra-seg (nerve / vessel means): 2x 0.997 / 0.998, 3x 0.986 / 0.989, 4x 0.983 / 0.987,
# 6x 0.971 / 0.978, 8x 0.959 / 0.969 (p10 at 4x 0.973 / 0.981, at 6x 0.955 / 0.967).
MEAN_MIN = 0.98
P10_MIN = 0.95
# ... and when each label's median cross-section (:func:`cross_section_mm`) still spans at least
# this many pixels of the coarser grid. The round trip measures what the grid loses for a
# perfect network; a trained one also misplaces the boundary by about a pixel of its grid,
# which costs about 2/d Dice on a structure d pixels across (0.125 at 16). Measured: the thigh
# phantom's nerve (8.2 mm, 10.9 px at 0.75 mm; 7.2 px on the 1.5x grid its round trip allows at
# 0.997) scored 0.924 held-back Dice on the full grid at 25 minutes and 0.89-0.91 on the 1.5x
# grid at 5-60 minutes; usgra-seg's nerve (81 px at 1 px, 20 px at 4x) did better on the 4x grid
# than on the 2x (0.629 / 0.559 hold-out, fold 0, equal time) and the 6x (13.5 px: 0.570 against
# 0.604 at batch 8). 16 lies between what lost (7.2, 13.5) and what won (20).
MIN_CROSS_SECTION_PX = 16.0


@dataclass(frozen=True)
class Resolution:
    """A coarser grid for one configuration: ``factor`` times its spacing along the fine axes
    (never coarser than its coarsest axis), and the median image there. ``small``: a label's
    median cross-section spans fewer than :data:`MIN_CROSS_SECTION_PX` pixels there
    (:func:`size_factor`) — a last resort of the budget planner, never bought for five folds."""

    factor: float
    spacing: tuple[float, ...]
    median_shape: tuple[int, ...]
    small: bool = False


def coarsest_factor(
    coarsening: Mapping[str, Mapping[str, Mapping[str, float]]] | None,
    labels: Sequence[str],
) -> tuple[float, str]:
    """The largest factor of :data:`FACTORS` (1 = none) whose round-trip Dice stays at or above
    :data:`MEAN_MIN` on average and :data:`P10_MIN` for the worst tenth, for every label in
    ``labels`` that the dataset contains. Factors are taken in order and the first that fails
    ends the search (a mask never gains from a coarser grid)."""
    if not coarsening or not any(coarsening.get(label) for label in labels):
        return 1.0, "the fingerprint has no coarsening Dice (recompute it): full resolution only"
    best, stop, kept = 1.0, "", ""
    for factor in FACTORS:
        worst = None
        for label in labels:
            per = coarsening.get(label)
            if not per:  # a label no case contains says nothing about the grid
                continue
            stats = per.get(f"{factor:g}")
            if stats is None:
                stats = {"mean": 0.0, "p10": 0.0}
            if worst is None or stats["mean"] < worst[1]["mean"]:
                worst = (label, stats)
            if stats["mean"] < MEAN_MIN or stats["p10"] < P10_MIN:
                stop = (
                    f"at {factor:g}x label {label} keeps mean {stats['mean']:.3f} / p10 "
                    f"{stats['p10']:.3f} (< {MEAN_MIN:g} / {P10_MIN:g})"
                )
                break
        if stop:
            break
        best = factor
        if worst is not None:
            kept = f"{factor:g}x keeps >= {worst[1]['mean']:.3f} mean Dice (label {worst[0]})"
    if best == 1.0:
        return 1.0, f"coarsening Dice: {stop or 'no factor measured'} -> full resolution only"
    return best, f"coarsening Dice: {kept}; {stop or 'coarsest factor measured'} -> up to {best:g}x"


def cross_section_mm(
    fraction: float,
    shape: Sequence[int],
    spacing: Sequence[float],
    extent_mm: Sequence[float] | None,
    n_components: int,
) -> float | None:
    """Equivalent diameter (mm) of one component's cross-section in one case: the label's
    area (2D) or volume over its longest box side (3D: a nerve, a vessel, a cord run along it),
    shared among its components, as a disc. ``fraction`` of the ``shape`` (after cropping) is
    the label; None when the case does not contain it."""
    if fraction <= 0 or not extent_mm or n_components <= 0:
        return None
    size = fraction * math.prod(shape) * math.prod(spacing)
    if len(shape) == 3:
        size /= max(max(extent_mm), min(spacing))
    return 2.0 * math.sqrt(size / n_components / math.pi)


def cross_sections(
    cases: Sequence[CaseFingerprint], labels: Sequence[str]
) -> dict[str, list[float]]:
    """Per label, :func:`cross_section_mm` of every case that contains it."""
    out: dict[str, list[float]] = {k: [] for k in labels}
    for c in cases:
        for k in labels:
            d = cross_section_mm(
                c.class_voxel_fraction.get(k, 0.0),
                c.shape_after_crop,
                c.spacing,
                c.foreground_extent_mm.get(k),
                c.n_components.get(k, 0),
            )
            if d is not None:
                out[k].append(d)
    return out


def size_factor(
    diameters_mm: Mapping[str, Sequence[float]], fine_spacing_mm: float
) -> tuple[float, str]:
    """The largest factor of :data:`FACTORS` (1 = none) at which every label's median
    cross-section (``diameters_mm``: label -> one diameter per case that contains it) spans at
    least :data:`MIN_CROSS_SECTION_PX` pixels of the grid ``fine_spacing_mm`` (the finest
    spacing) x factor."""
    medians = {k: float(np.median(d)) for k, d in diameters_mm.items() if len(d)}
    if not medians:
        return math.inf, "no label's cross-section measured: no limit from the structure size"
    label, d = min(medians.items(), key=lambda kv: kv[1])
    px = d / fine_spacing_mm
    best = 1.0
    for factor in FACTORS:
        if px / factor < MIN_CROSS_SECTION_PX:
            break
        best = factor
    head = (
        f"structure size: label {label}'s median cross-section {d:.3g} mm = {px:.3g} px at "
        f"{fine_spacing_mm:g} mm"
    )
    if best == 1.0:
        return 1.0, (
            f"{head}, under {MIN_CROSS_SECTION_PX:g} px at 1.5x: coarser grids only as a last "
            "resort"
        )
    return best, (
        f"{head}, >= {MIN_CROSS_SECTION_PX:g} px up to {best:g}x; coarser ones only as a last "
        "resort"
    )


def coarser_spacing(
    spacing: Sequence[float], factor: float, cap: float | None = None
) -> tuple[float, ...]:
    """``spacing`` with its fine axes (:func:`autoseg.planning.patch.fine_axes`) ``factor``
    times coarser, but no coarser than ``cap`` — by default its thick axis when it has one: a
    0.75 x 0.75 x 3 mm stack at 8x becomes 3 x 3 x 3 mm, not 6 x 6 x 3 (a 2D slice of it passes
    the 3 mm as ``cap``). A grid without a thick axis has no cap."""
    fine = fine_axes(spacing)
    if cap is None:
        thick = [float(s) for s, f in zip(spacing, fine) if not f]
        cap = max(thick) if thick else math.inf
    return tuple(min(cap, float(s) * factor) if f else float(s) for s, f in zip(spacing, fine))


def useful_factors(
    spacing: Sequence[float], max_factor: float, cap: float | None = None
) -> list[float]:
    """The factors up to ``max_factor`` that still change the grid (a stack already isotropic
    after 4x gains nothing from 6x)."""
    out: list[float] = []
    previous = tuple(float(s) for s in spacing)
    for factor in FACTORS:
        if factor > max_factor + 1e-9:
            break
        grid = coarser_spacing(spacing, factor, cap)
        if not all(math.isclose(a, b) for a, b in zip(grid, previous)):
            out.append(factor)
            previous = grid
    return out
