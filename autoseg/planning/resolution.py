"""Coarser training grids for short time budgets: how far a configuration may be coarsened.

A network's step time follows its voxel count, so a grid twice as coarse in-plane trains about
four times as many iterations in the same time. What it costs is measured in the fingerprint
(:func:`autoseg.fingerprint.extract.coarsening_dice`): the Dice the reference masks themselves
keep after a round trip to the coarser grid — an upper bound of what a perfect network could
reach there. The budget planner (:mod:`autoseg.planning.budget`) offers the grids up to the
coarsest one that keeps enough as rungs of its ladder, before narrower networks and smaller
patches; predictions are resampled back to the input grid (linear on the probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoseg.planning.patch import fine_axes

# Coarsening factors the ladder may take, finest first (the fingerprint measures these).
FACTORS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
# A factor is allowed when, for every foreground label, the reference masks keep on average at
# least this Dice after the round trip, and the worst tenth of the cases at least P10_MIN.
# usgra-seg (nerve / vessel means): 2x 0.997 / 0.998, 3x 0.986 / 0.989, 4x 0.983 / 0.987,
# 6x 0.971 / 0.978, 8x 0.959 / 0.969 (p10 at 4x 0.973 / 0.981, at 6x 0.955 / 0.967).
MEAN_MIN = 0.98
P10_MIN = 0.95


@dataclass(frozen=True)
class Resolution:
    """A coarser grid for one configuration: ``factor`` times its spacing along the fine axes
    (never coarser than its coarsest axis), and the median image there."""

    factor: float
    spacing: tuple[float, ...]
    median_shape: tuple[int, ...]


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
