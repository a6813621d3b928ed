"""Hand-built fingerprints of a described geometry, for tests, golden plans and what-if planning.

``synthetic_fingerprint`` writes the same schema as ``autoseg fingerprint`` (its aggregate is
computed by :func:`autoseg.fingerprint.aggregate` itself), for a dataset described by a median
shape, spacing and foreground size, with a small deterministic spread over the cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autoseg.fingerprint import SCHEMA_VERSION, aggregate


def synthetic_fingerprint(
    dataset: str,
    shape: Sequence[int],
    spacing: Sequence[float],
    *,
    n_cases: int = 20,
    modality: str = "mri",
    channel_names: Mapping[str, str] | None = None,
    labels: Mapping[str, int] | None = None,
    foreground_fraction: Mapping[str, float] | None = None,
    foreground_extent_mm: Mapping[str, Sequence[float]] | None = None,
    shape_spread: float = 0.0,
    spacing_spread: float = 0.0,
    crop_fraction: float = 1.0,
    intensity_mean: float = 300.0,
    intensity_std: float = 80.0,
    coarsening_dice: Mapping[str, Mapping[str, float]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A fingerprint dict (schema version 1) of ``n_cases`` cases around the given geometry.

    ``shape``/``spacing`` in array order; ``shape_spread``/``spacing_spread`` are relative
    standard deviations of the per-case values; ``crop_fraction`` is the per-axis fraction kept
    by cropping to nonzero; ``foreground_fraction`` and ``foreground_extent_mm`` are per label
    value (string keys), the extent also per axis in mm. ``coarsening_dice`` (label -> factor
    ("2") -> Dice) is every case's round-trip Dice at coarser grids
    (:func:`autoseg.fingerprint.extract.coarsening_dice`); without it the fingerprint has none,
    like one written before the statistic existed. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    channel_names = dict(channel_names or {"0": "T2" if modality == "mri" else modality})
    labels = dict(labels or {"background": 0, "nerve": 1})
    keys = [str(v) for v in labels.values() if v != 0]
    fraction = {k: 0.0015 for k in keys} | dict(foreground_fraction or {})
    extent = dict(foreground_extent_mm or {})
    dim = len(shape)
    cases = []
    samples = []
    for i in range(n_cases):
        sp = [round(float(s * (1 + spacing_spread * rng.standard_normal())), 4) for s in spacing]
        sh = [max(1, int(round(n * (1 + shape_spread * rng.standard_normal())))) for n in shape]
        crop = [max(1, int(round(n * crop_fraction))) for n in sh]
        start = [(n - c) // 2 for n, c in zip(sh, crop)]
        scale = float(np.exp(0.1 * rng.standard_normal()))
        size_mm = [n * s for n, s in zip(sh, sp)]
        ext = {
            k: [round(float(min(e * scale, m)), 3) for e, m in zip(extent[k], size_mm)]
            if k in extent
            else None
            for k in keys
        }
        present = [e for e in ext.values() if e is not None]
        all_ext = [max(v) for v in zip(*present)] if present else None
        case_fraction = {k: float(fraction[k] * scale**2) for k in keys}
        values = rng.normal(intensity_mean, intensity_std, 200)
        cases.append(
            {
                "case_id": f"case_{i:03d}",
                "spacing": sp,
                "shape": sh,
                "shape_after_crop": crop,
                "crop_bbox": [[a, a + c] for a, c in zip(start, crop)],
                "class_voxel_fraction": case_fraction,
                "foreground_extent_mm": ext,
                "foreground_extent_all_mm": all_ext,
                "n_components": {k: 1 if ext[k] else 0 for k in keys},
                "intensity": {
                    ch: {
                        "mean": float(values.mean()),
                        "std": float(values.std()),
                        "p00_5": float(np.percentile(values, 0.5)),
                        "p99_5": float(np.percentile(values, 99.5)),
                        "min": float(values.min()),
                        "max": float(values.max()),
                    }
                    for ch in channel_names
                },
            }
        )
        if coarsening_dice is not None:
            cases[-1]["coarsening_dice"] = {
                k: {str(f): float(d) for f, d in per.items()} if ext.get(k) else {}
                for k, per in coarsening_dice.items()
            }
        samples.append([values for _ in channel_names])
    label_values = [v for v in labels.values() if v != 0]
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "dim": dim,
        "n_cases": n_cases,
        "channel_names": channel_names,
        "modality": dict.fromkeys(channel_names, modality),
        "labels": labels,
        "cases": cases,
        "aggregate": aggregate(cases, samples, label_values, len(channel_names)),
    }
