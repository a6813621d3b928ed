"""Dataset fingerprint: per-case statistics, pooled over the dataset, into ``fingerprint.json``.

Reading the files is the cost (decompressing ``.nii.gz``); every file is therefore read once,
and all statistics are then a handful of vectorised passes over the arrays:

* one pass for "non-zero in any channel" (the crop box), one for "labelled" (the foreground
  box); both boxes come from axis projections (:func:`bounding_box`), never from voxel
  coordinate lists;
* everything label-related (voxel counts, per-label boxes, connected components, foreground
  intensities) runs inside the foreground box only, which for a nerve is ~1 % of the volume.

Cases run in parallel processes (they share nothing); the pooled intensity statistics use at
most 10,000 foreground voxels per case drawn with a fixed seed, so memory stays flat and the
result does not depend on the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.fingerprint.modality import channel_modalities
from autoseg.fingerprint.schema import FINGERPRINT_FILE, SCHEMA_VERSION, load_fingerprint
from autoseg.io import (
    Case,
    DatasetJson,
    collapse_grey_rgb,
    list_cases,
    load_dataset_json,
    read_image,
    write_json_atomic,
)
from autoseg.io.components import label_components
from autoseg.io.labels import as_label_map
from autoseg.io.parallel import default_workers, map_cases
from autoseg.paths import dataset_name, preprocessed_dir, resolve_dataset

MAX_SAMPLES_PER_CASE = 10_000
# Grids the labels are sent to and back (coarser by these factors along the fine axes) to
# measure what a coarser training grid costs even a perfect network (:func:`coarsening_dice`).
COARSENING_FACTORS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
SAMPLE_SEED = 1234


# --------------------------------------------------------------------------------------------
# Pure array statistics
# --------------------------------------------------------------------------------------------


def bounding_box(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """``[start, stop)`` per axis around the True voxels of ``mask``; None if there are none.

    Projects instead of listing coordinates: ``any`` over the trailing axes gives the first
    axis' range, then the remaining axes are found on the (already cut) projection along the
    first axis. That is about two passes over the volume whatever the number of True voxels,
    where ``np.nonzero`` would allocate three int64 arrays the size of the foreground.
    """
    if mask.ndim == 1:
        idx = np.flatnonzero(mask)
        return None if idx.size == 0 else [(int(idx[0]), int(idx[-1]) + 1)]
    first = mask.any(axis=tuple(range(1, mask.ndim)))
    idx = np.flatnonzero(first)
    if idx.size == 0:
        return None
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    rest = bounding_box(mask[lo:hi].any(axis=0))
    assert rest is not None  # the cut holds True voxels
    return [(lo, hi), *rest]


def clean_spacing(value: float) -> float:
    """The shortest decimal that is the same float32 as ``value``: 0.2 rather than
    0.20000000298023224, which is what NIfTI's float32 header fields turn into as doubles.

    The change (< 1e-7 relative, nanometres) is far below any resampling tolerance, and plans
    derived from clean numbers stay readable.
    """
    return float(str(np.float32(value)))


def box_slices(box: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in box)


def box_extent_mm(box: Sequence[tuple[int, int]], spacing: Sequence[float]) -> list[float]:
    """Physical size of a box: voxels spanned times spacing, per axis."""
    return [float((b - a) * s) for (a, b), s in zip(box, spacing)]


def count_components(mask: np.ndarray) -> int:
    """Connected components of a 2D/3D mask with full connectivity (8 in 2D, 26 in 3D).

    Full connectivity because a thin oblique nerve crossing slices touches its neighbour only
    diagonally in strongly anisotropic stacks (3-4 mm slices); face connectivity would count
    one nerve as several pieces.
    """
    return label_components(mask)[1]


def fine_axes_of(spacing: Sequence[float]) -> list[bool]:
    """Axes whose spacing is below twice the finest: the in-plane axes of an anisotropic
    stack (0.5 x 0.5 x 3.5 mm -> the two 0.5 mm axes), every axis of a near-isotropic one."""
    finest = min(spacing)
    return [s < 2 * finest for s in spacing]


def coarsening_dice(
    mask: np.ndarray, spacing: Sequence[float], factors: Sequence[float] = COARSENING_FACTORS
) -> dict[str, float]:
    """Dice between a binary mask and itself after a round trip to a grid ``f`` times coarser
    along its fine axes (:func:`fine_axes_of`) and back, for each factor ``f``.

    The trip is what training at that grid does to the reference: the mask is resampled
    linearly to the coarse grid (as one-hot labels are by preprocessing), then linearly back
    to its own grid and thresholded at 0.5 (as predicted probabilities are by inversion). So
    it is the Dice a perfect network would lose by working on the coarse grid, and it depends
    on how many voxels the structure spans: a 40-voxel-wide nerve keeps ~0.99 at 4x, a
    5-voxel-wide one ~0.8. The mask is cut to its bounding box plus a margin of the largest
    factor, so the cost follows the structure's size. A factor whose Dice falls below 0.5 ends
    the search (coarser ones are not computed)."""
    from scipy import ndimage

    box = bounding_box(mask)
    if box is None:
        return {}
    fine = fine_axes_of(spacing)
    margin = int(np.ceil(max(factors, default=1.0))) + 1
    cut = tuple(
        slice(max(0, a - margin), min(n, b + margin)) if f else slice(a, b)
        for (a, b), n, f in zip(box, mask.shape, fine)
    )
    ref = np.ascontiguousarray(mask[cut], dtype=np.float32)
    size = float(ref.sum())
    out: dict[str, float] = {}
    for factor in factors:
        coarse = [max(1, round(n / factor)) if f else n for n, f in zip(ref.shape, fine)]
        zoom = [m / n for m, n in zip(coarse, ref.shape)]
        small = ndimage.zoom(ref, zoom, order=1, mode="nearest", grid_mode=True)
        back = ndimage.zoom(
            small,
            [n / m for n, m in zip(ref.shape, small.shape)],
            order=1,
            mode="nearest",
            grid_mode=True,
        )
        kept = back > 0.5
        dice = 2.0 * float(ref[kept].sum()) / (size + float(kept.sum()))
        out[f"{factor:g}"] = round(dice, 4)
        if dice < 0.5:
            break
    return out


def intensity_stats(values: np.ndarray) -> dict[str, float | None]:
    """Mean, population std, 0.5/99.5 percentiles (linear interpolation), min, max."""
    if values.size == 0:
        return dict.fromkeys(("mean", "std", "p00_5", "p99_5", "min", "max"))
    v = values.astype(np.float64, copy=False)
    p00_5, p99_5 = np.percentile(v, (0.5, 99.5))
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "p00_5": float(p00_5),
        "p99_5": float(p99_5),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def case_statistics(
    channels: Sequence[np.ndarray],
    seg: np.ndarray,
    spacing: Sequence[float],
    label_values: Sequence[int],
    *,
    case_id: str = "",
    max_samples: int = MAX_SAMPLES_PER_CASE,
    seed: int = SAMPLE_SEED,
    path: str | os.PathLike | None = None,
    ignore_label: int | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Statistics of one case from its arrays (array order); no file access.

    ``channels`` are same-shape arrays, ``seg`` a non-negative integer label map on the same
    grid, ``label_values`` the foreground values declared in ``dataset.json``. Returns the
    case's entry of ``fingerprint.json`` and, per channel, up to ``max_samples`` foreground
    intensities (the same voxels in every channel) for the dataset-wide statistics.

    ``ignore_label`` (sparse annotation): voxels of that value are unlabelled. They are neither
    foreground nor background: class fractions are of the labelled voxels only (a nerve
    labelled in every 4th slice keeps its true share instead of a quarter of it), the
    foreground box and intensities skip them, and the entry gains ``labelled_fraction``.
    """
    shape = tuple(int(s) for s in seg.shape)
    spacing = [clean_spacing(s) for s in spacing]
    n_voxels = int(seg.size)
    n_labelled = n_voxels
    if ignore_label is not None:
        n_labelled -= int(np.count_nonzero(seg == ignore_label))

    nonzero = channels[0] != 0
    for ch in channels[1:]:
        nonzero |= ch != 0
    crop = bounding_box(nonzero) or [(0, s) for s in shape]  # all-zero image: nothing to crop
    del nonzero

    fg_box = bounding_box(seg != 0 if ignore_label is None else (seg != 0) & (seg != ignore_label))
    keys = [str(v) for v in label_values]
    fraction = dict.fromkeys(keys, 0.0)
    extent: dict[str, list[float] | None] = dict.fromkeys(keys)
    components = dict.fromkeys(keys, 0)
    coarsening: dict[str, dict[str, float]] = {}
    samples: list[np.ndarray] = [np.empty(0, np.float64) for _ in channels]
    if fg_box is None:
        intensity = {str(c): intensity_stats(np.empty(0)) for c in range(len(channels))}
    else:
        cut = box_slices(fg_box)
        seg_cut = np.ascontiguousarray(seg[cut])
        allowed = [*label_values, *(() if ignore_label is None else (ignore_label,))]
        declared_max = max(allowed, default=0)
        if int(seg_cut.max()) > declared_max:  # checked first: bincount sizes by the maximum
            unknown = np.unique(seg_cut[seg_cut > declared_max]).tolist()
        else:
            counts = np.bincount(seg_cut.ravel().astype(np.intp, copy=False))
            unknown = sorted(set(np.flatnonzero(counts).tolist()) - {0, *allowed})
        if unknown:
            raise AutosegError(
                f"label map holds values {unknown} that dataset.json does not declare",
                path=path,
                fix="add them to 'labels' in dataset.json or fix the label file "
                "('autoseg verify' lists all such files)",
            )
        for key, value in zip(keys, label_values):
            count = int(counts[value]) if value < counts.size else 0
            if count == 0:
                continue
            fraction[key] = count / n_labelled
            mask = seg_cut == value
            box = bounding_box(mask)
            assert box is not None
            extent[key] = box_extent_mm(box, spacing)
            components[key] = count_components(mask[box_slices(box)])
            coarsening[key] = coarsening_dice(mask, spacing)
        fg = seg_cut != 0
        n_fg = int(counts[1:].sum())
        if ignore_label is not None:
            fg &= seg_cut != ignore_label
            n_fg -= int(counts[ignore_label]) if ignore_label < counts.size else 0
        rng = np.random.default_rng(seed)
        pick = None if n_fg <= max_samples else rng.choice(n_fg, max_samples, replace=False)
        intensity = {}
        for c, ch in enumerate(channels):
            values = ch[cut][fg]
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise AutosegError(
                    f"channel {c} holds NaN or infinite values inside the labelled region",
                    path=path,
                    fix="re-export the image with finite values",
                )
            intensity[str(c)] = intensity_stats(values)
            samples[c] = (values if pick is None else values[pick]).astype(np.float64)

    entry = {
        "case_id": case_id,
        "spacing": spacing,
        "shape": list(shape),
        "shape_after_crop": [b - a for a, b in crop],
        "crop_bbox": [[a, b] for a, b in crop],
        "class_voxel_fraction": fraction,
        "foreground_extent_mm": extent,
        "foreground_extent_all_mm": None if fg_box is None else box_extent_mm(fg_box, spacing),
        "n_components": components,
        "intensity": intensity,
        "coarsening_dice": coarsening,
    }
    if ignore_label is not None:
        entry["labelled_fraction"] = n_labelled / n_voxels if n_voxels else 0.0
    return entry, samples


# --------------------------------------------------------------------------------------------
# Reading one case
# --------------------------------------------------------------------------------------------


def _read_grey(path: Path) -> tuple[np.ndarray, Any]:
    image = read_image(path)
    array = image.array
    if image.n_components > 1:
        array = collapse_grey_rgb(array, path)  # grey content saved as RGB (ultrasound exports)
    if image.geometry.ndim not in (2, 3):
        raise AutosegError(
            f"image has {image.geometry.ndim} dimensions; only 2D and 3D are supported",
            path=path,
        )
    return array, image.geometry


def analyse_case(
    case: Case,
    label_values: Sequence[int],
    max_samples: int = MAX_SAMPLES_PER_CASE,
    ignore_label: int | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Read one case (each file once) and return :func:`case_statistics` for it."""
    assert case.label is not None
    seg_raw, seg_geom = _read_grey(case.label)
    seg = as_label_map(seg_raw, case.label)
    channels = []
    spacing = None
    for path in case.images:
        array, geom = _read_grey(path)
        if array.shape != seg.shape:
            raise AutosegError(
                f"image shape {array.shape} differs from its label's {seg.shape}",
                path=path,
                fix="image and label must share one voxel grid ('autoseg verify' checks all)",
            )
        channels.append(array)
        spacing = spacing or geom.spacing_zyx
    return case_statistics(
        channels,
        seg,
        spacing or seg_geom.spacing_zyx,
        label_values,
        case_id=case.case_id,
        max_samples=max_samples,
        path=case.label,
        ignore_label=ignore_label,
    )


# --------------------------------------------------------------------------------------------
# Dataset-wide aggregation
# --------------------------------------------------------------------------------------------


def _floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.atleast_1d(a)]


def aggregate_coarsening(
    cases: Sequence[dict[str, Any]], keys: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]] | None:
    """Per label and factor, the mean and 10th percentile of the cases' coarsening Dice, over
    the cases that contain the label. A factor a case did not reach (its Dice fell below 0.5
    at a finer one) counts as 0 there, so a few tiny structures pull the mean and the p10 down.
    None when no case carries the statistic (entries written without it): unknown, which the
    planner reads as "full resolution only", not as "anything goes"."""
    if not any("coarsening_dice" in c for c in cases):
        return None
    out: dict[str, dict[str, dict[str, float]]] = {}
    for k in keys:
        per_case = [d for c in cases if (d := (c.get("coarsening_dice") or {}).get(k))]
        factors = sorted({f for d in per_case for f in d}, key=float)
        out[k] = {}
        for f in factors:
            values = [d.get(f, 0.0) for d in per_case]
            out[k][f] = {
                "mean": float(np.mean(values)),
                "p10": float(np.percentile(values, 10)),
            }
    return out


def aggregate(
    cases: Sequence[dict[str, Any]],
    samples: Sequence[Sequence[np.ndarray]],
    label_values: Sequence[int],
    n_channels: int,
) -> dict[str, Any]:
    """Dataset summaries from the per-case entries and their sampled foreground intensities.

    Label summaries (extent, components) use only the cases that contain the label, so a
    label missing from a few scans does not drag its typical size towards zero; fractions
    average over all cases (absent = 0), which is what class-imbalance rules need.
    """
    spacing = np.array([c["spacing"] for c in cases], dtype=np.float64)
    shape = np.array([c["shape"] for c in cases], dtype=np.float64)
    cropped = np.array([c["shape_after_crop"] for c in cases], dtype=np.int64)
    spacing_median = np.median(spacing, axis=0)
    keys = [str(v) for v in label_values]

    extent: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for k in keys:
        ext = [c["foreground_extent_mm"][k] for c in cases if c["foreground_extent_mm"][k]]
        if ext:
            e = np.array(ext, dtype=np.float64)
            extent[k] = {
                "median": _floats(np.median(e, axis=0)),
                "p95": _floats(np.percentile(e, 95, axis=0)),
                "max": _floats(e.max(axis=0)),
            }
            n = np.array([c["n_components"][k] for c in cases if c["n_components"][k] > 0])
            components[k] = {"median": float(np.median(n)), "max": int(n.max())}
        else:
            extent[k] = None
            components[k] = None

    coarsening = aggregate_coarsening(cases, keys)

    intensity = {}
    for ch in range(n_channels):
        key = str(ch)
        pooled = np.concatenate([s[ch] for s in samples]) if samples else np.empty(0)
        stats: dict[str, float | None] = {
            "mean": None,
            "std": None,
            "p00_5": None,
            "p99_5": None,
            "min": None,
            "max": None,
            "median": None,
        }
        if pooled.size:
            p00_5, median, p99_5 = np.percentile(pooled, (0.5, 50.0, 99.5))
            # min/max are exact: taken from every case's full foreground, not from the sample.
            mins = [
                c["intensity"][key]["min"] for c in cases if c["intensity"][key]["min"] is not None
            ]
            maxs = [
                c["intensity"][key]["max"] for c in cases if c["intensity"][key]["max"] is not None
            ]
            stats.update(
                mean=float(pooled.mean()),
                std=float(pooled.std()),
                p00_5=float(p00_5),
                p99_5=float(p99_5),
                min=float(min(mins)),
                max=float(max(maxs)),
                median=float(median),
            )
        intensity[key] = stats

    return {
        "spacing_median": _floats(spacing_median),
        "spacing_min": _floats(spacing.min(axis=0)),
        "spacing_max": _floats(spacing.max(axis=0)),
        "shape_median": _floats(np.median(shape, axis=0)),
        "shape_after_crop_median": _floats(np.median(cropped, axis=0)),
        "shape_after_crop_max": [int(x) for x in cropped.max(axis=0)],
        "anisotropy_ratio": float(spacing_median.max() / spacing_median.min()),
        "class_voxel_fraction_mean": {
            k: float(np.mean([c["class_voxel_fraction"][k] for c in cases])) for k in keys
        },
        "class_voxel_fraction_median": {
            k: float(np.median([c["class_voxel_fraction"][k] for c in cases])) for k in keys
        },
        "foreground_extent_mm": extent,
        "n_components": components,
        "cases_without_foreground": sum(c["foreground_extent_all_mm"] is None for c in cases),
        "intensity": intensity,
        # absent (not null) when unknown, as in fingerprints written before it existed
        **({} if coarsening is None else {"coarsening_dice": coarsening}),
    }


# --------------------------------------------------------------------------------------------
# Running over a dataset
# --------------------------------------------------------------------------------------------


class _CaseTask:
    """Picklable per-case job (a closure would not cross process boundaries)."""

    def __init__(
        self, label_values: Sequence[int], max_samples: int, ignore_label: int | None = None
    ):
        self.label_values = tuple(label_values)
        self.max_samples = max_samples
        self.ignore_label = ignore_label

    def __call__(self, case: Case) -> tuple[dict[str, Any], list[np.ndarray]]:
        return analyse_case(case, self.label_values, self.max_samples, self.ignore_label)


def _training_cases(dataset_dir: Path, ds: DatasetJson) -> list[Case]:
    cases = list_cases(dataset_dir, ds)
    if not cases:
        raise AutosegError(
            "no training cases (labelsTr is empty or missing)",
            path=dataset_dir / "labelsTr",
            fix="put one label file per case into labelsTr ('autoseg convert' does this)",
        )
    return cases


def extract_fingerprint(
    dataset_dir: str | os.PathLike,
    *,
    num_workers: int | None = None,
    progress: bool = True,
    max_samples: int = MAX_SAMPLES_PER_CASE,
) -> dict[str, Any]:
    """Compute the fingerprint of a raw dataset folder; returns the ``fingerprint.json`` dict."""
    dataset_dir = Path(dataset_dir)
    ds = load_dataset_json(dataset_dir)
    cases = _training_cases(dataset_dir, ds)
    label_values = sorted(ds.foreground_labels.values())
    workers = default_workers() if num_workers is None else num_workers
    results = map_cases(
        _CaseTask(label_values, max_samples, ds.ignore_label),
        cases,
        num_workers=workers,
        progress=progress,
        desc="fingerprint",
    )
    entries = [r[0] for r in results]
    dims = {len(e["shape"]) for e in entries}
    if len(dims) > 1:
        by_dim = {d: next(e["case_id"] for e in entries if len(e["shape"]) == d) for d in dims}
        raise AutosegError(
            "dataset mixes 2D and 3D images (e.g. "
            + ", ".join(f"{cid}: {d}D" for d, cid in sorted(by_dim.items()))
            + ")",
            path=dataset_dir,
            fix="convert all cases to the same dimensionality",
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset_name(dataset_dir.resolve()),
        "dim": dims.pop(),
        "n_cases": len(entries),
        "channel_names": dict(ds.channel_names),
        "modality": channel_modalities(ds.channel_names),
        "labels": dict(ds.class_labels),  # the classes; the ignore label is not one
        **({} if ds.ignore_label is None else {"ignore_label": ds.ignore_label}),
        "cases": entries,
        "aggregate": aggregate(entries, [r[1] for r in results], label_values, ds.n_channels),
    }


def fingerprint_path(dataset_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """``<root>/preprocessed/<dataset folder name>/fingerprint.json``."""
    return preprocessed_dir(root) / dataset_name(Path(dataset_dir).resolve()) / FINGERPRINT_FILE


def fingerprint_is_fresh(dataset_dir: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path`` holds a readable fingerprint of the current schema, newer than
    ``dataset.json``, listing exactly the cases now in ``labelsTr``."""
    dataset_dir, path = Path(dataset_dir), Path(path)
    ds_json = dataset_dir / "dataset.json"
    if not path.is_file() or not ds_json.is_file():
        return False
    if path.stat().st_mtime < ds_json.stat().st_mtime:
        return False
    try:
        fp = load_fingerprint(path)
        current = [c.case_id for c in list_cases(dataset_dir)]
    except AutosegError:
        return False
    if fp.aggregate.coarsening_dice is None:  # written before the statistic existed
        return False
    return [c.case_id for c in fp.cases] == current


def run_fingerprint(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``fingerprint.json`` for a dataset (id, folder name or path) and return its path.

    Skips the work when the file is fresh (see :func:`fingerprint_is_fresh`) unless
    ``overwrite``.
    """
    dataset_dir = resolve_dataset(dataset, root)
    out = fingerprint_path(dataset_dir, root)
    if not overwrite and fingerprint_is_fresh(dataset_dir, out):
        return out
    fp = extract_fingerprint(dataset_dir, num_workers=num_workers, progress=progress)
    write_json_atomic(out, fp)
    return out
