"""Segmentation metrics per case and label, and ``autoseg evaluate`` over folders.

Every metric, with its rule for empty masks, is defined in documentation/evaluation.md. In
short, for a label with prediction P and reference R (voxel sets):

- overlap: Dice ``2|P∩R|/(|P|+|R|)``, IoU ``|P∩R|/|P∪R|``, volumetric overlap error
  ``1 - IoU``, volumetric similarity ``1 - ||P|-|R||/(|P|+|R|)``, voxel precision
  ``|P∩R|/|P|`` and recall ``|P∩R|/|R|``;
- surface distances in mm (:mod:`autoseg.evaluation.surface`): HD95, HD (maximum), ASSD;
- detection: connected components (26-connected in 3D, 8 in 2D); a reference component is
  found, and a predicted one is a true positive, when some component of the other mask has
  IoU >= 0.1 with it (:data:`DETECTION_IOU`);
- failure: Dice < 0.5 (the sciatic-nerve study's definition).

Empty masks: both empty gives perfect scores (Dice 1, distances 0); exactly one empty gives
0 for every overlap and detection score, NaN for the distances, and the image diagonal in mm
in the ``*_filled`` distance columns, whose means are therefore always defined.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.evaluation.summary import (
    load_cohorts,
    summarize,
    summary_table,
    write_csv,
)
from autoseg.evaluation.surface import bounding_slices, distance_metrics, image_diagonal_mm
from autoseg.io import Geometry, load_dataset_json, split_extension, write_json_atomic
from autoseg.io.atomic import TMP_MARK, json_safe
from autoseg.io.components import label_components
from autoseg.io.labels import read_label_map
from autoseg.io.parallel import map_cases

FAILURE_DICE = 0.5
"""Dice below this is a failed case (the sciatic-nerve MRN study's definition of failure)."""

DETECTION_IOU = 0.1
"""Component IoU at or above which two components match.

0.1 is the usual threshold of 3D medical object detection (LUNA16/nnDetection-style): a nerve
is 5-20 voxels across, so a prediction shifted by a few voxels or cut into two pieces (each
with IoU ~0.3-0.5) still finds the nerve, while a blob that merely touches it (IoU of a few
per cent) does not.
"""

HD_PERCENTILE = 95.0

METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "iou",
    "voe",
    "volume_similarity",
    "precision",
    "recall",
    "hd95_mm",
    "hd_mm",
    "assd_mm",
    "hd95_mm_filled",
    "hd_mm_filled",
    "assd_mm_filled",
    "det_precision",
    "det_recall",
    "n_ref_components",
    "n_pred_components",
    "det_fn",
    "det_fp",
    "volume_ref_mm3",
    "volume_pred_mm3",
    "failure",
)
DISTANCE_KEYS = ("hd95_mm", "hd_mm", "assd_mm")
HIGHER_IS_BETTER = {
    "dice": True,
    "iou": True,
    "voe": False,
    "volume_similarity": True,
    "precision": True,
    "recall": True,
    "hd95_mm": False,
    "hd_mm": False,
    "assd_mm": False,
    "hd95_mm_filled": False,
    "hd_mm_filled": False,
    "assd_mm_filled": False,
    "det_precision": True,
    "det_recall": True,
    "failure": False,
}


# --------------------------------------------------------------------------------------------
# Pure metrics on arrays


def dice(pred: np.ndarray, ref: np.ndarray, label: int = 1) -> float:
    """Dice of one label: ``2|P∩R| / (|P|+|R|)``; 1.0 when the label is in neither."""
    p = np.asarray(pred) == label
    r = np.asarray(ref) == label
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & r)) / total


def compute_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    ignore_label: int | None = None,
) -> dict[int, dict[str, float]]:
    """``{label: {metric: value}}`` for label maps on one grid (keys in :data:`METRIC_KEYS`).

    ``spacing`` is in array order ((z, y, x) or (y, x)), in mm. Masks are cropped to the
    bounding box of both before anything else, so the cost follows the structure's size, not
    the image's. ``ignore_label`` (sparse annotation): reference voxels of that value are
    unlabelled and count for nothing — both masks are cut to the labelled voxels (set to
    background elsewhere) before any metric, so overlap scores are those of the labelled
    voxels, and surfaces end where the labelling ends.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    pred, ref = mask_unlabelled(pred, ref, ignore_label)
    if len(spacing) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {ref.ndim}D image")
    spacing = tuple(float(s) for s in spacing)
    diagonal = image_diagonal_mm(ref.shape, spacing)
    voxel_mm3 = math.prod(spacing)
    return {
        int(label): binary_metrics(pred == label, ref == label, spacing, diagonal, voxel_mm3)
        for label in labels
    }


def mask_unlabelled(
    pred: np.ndarray, ref: np.ndarray, ignore_label: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and reference with the reference's unlabelled voxels (``ignore_label``) set
    to background in both (the arrays themselves when there are none)."""
    if ignore_label is None:
        return pred, ref
    unlabelled = ref == ignore_label
    if not unlabelled.any():
        return pred, ref
    return np.where(unlabelled, 0, pred), np.where(unlabelled, 0, ref)


def both_empty_metrics() -> dict[str, float]:
    """Scores of a label absent from prediction and reference: perfect agreement."""
    out = dict.fromkeys(METRIC_KEYS, 0.0)
    for key in ("dice", "iou", "volume_similarity", "precision", "recall"):
        out[key] = 1.0
    out["det_precision"] = out["det_recall"] = 1.0
    return out


def binary_metrics(
    p: np.ndarray,
    r: np.ndarray,
    spacing: Sequence[float],
    diagonal_mm: float | None = None,
    voxel_mm3: float | None = None,
) -> dict[str, float]:
    """All metrics of one binary prediction ``p`` against a binary reference ``r``."""
    if diagonal_mm is None:
        diagonal_mm = image_diagonal_mm(r.shape, spacing)
    if voxel_mm3 is None:
        voxel_mm3 = math.prod(spacing)
    box = bounding_slices(p | r, margin=1)
    if box is None:
        return both_empty_metrics()
    p = p[box]
    r = r[box]
    n_p = int(np.count_nonzero(p))
    n_r = int(np.count_nonzero(r))
    tp = int(np.count_nonzero(p & r))
    out: dict[str, float] = {}
    out["dice"] = 2.0 * tp / (n_p + n_r)
    out["iou"] = tp / (n_p + n_r - tp)
    out["voe"] = 1.0 - out["iou"]
    out["volume_similarity"] = 1.0 - abs(n_p - n_r) / (n_p + n_r)
    # Exactly one empty: precision/recall are 0 (a complete failure), never undefined.
    out["precision"] = tp / n_p if n_p and n_r else 0.0
    out["recall"] = tp / n_r if n_p and n_r else 0.0
    if n_p and n_r:
        d = distance_metrics(p, r, spacing, HD_PERCENTILE)
        out["hd95_mm"], out["hd_mm"], out["assd_mm"] = d["hd_percentile"], d["hd"], d["assd"]
        for key in DISTANCE_KEYS:
            out[f"{key}_filled"] = out[key]
    else:
        for key in DISTANCE_KEYS:
            out[key] = math.nan
            out[f"{key}_filled"] = diagonal_mm
    out.update(detection_metrics(p, r))
    out["volume_ref_mm3"] = n_r * voxel_mm3
    out["volume_pred_mm3"] = n_p * voxel_mm3
    out["failure"] = float(out["dice"] < FAILURE_DICE)
    return {k: float(out[k]) for k in METRIC_KEYS}


def detection_metrics(p: np.ndarray, r: np.ndarray, iou_threshold: float = DETECTION_IOU):
    """Component-level precision/recall and counts (see :data:`DETECTION_IOU`).

    A predicted component may match several reference components and vice versa (a nerve
    predicted in two pieces gives two true-positive predictions for one found nerve).
    """
    lp, n_pc = label_components(p)  # full connectivity: 26 in 3D, 8 in 2D
    lr, n_rc = label_components(r)
    found_ref = matched_pred = 0
    if n_pc and n_rc:
        both = (lp > 0) & (lr > 0)
        pairs = lp[both].astype(np.int64) * (n_rc + 1) + lr[both]
        codes, inter = np.unique(pairs, return_counts=True)
        ip, ir = np.divmod(codes, n_rc + 1)
        size_p = np.bincount(lp.ravel(), minlength=n_pc + 1)
        size_r = np.bincount(lr.ravel(), minlength=n_rc + 1)
        iou = inter / (size_p[ip] + size_r[ir] - inter)
        hit = iou >= iou_threshold
        found_ref = np.unique(ir[hit]).size
        matched_pred = np.unique(ip[hit]).size
    if n_pc and n_rc:
        det_precision, det_recall = matched_pred / n_pc, found_ref / n_rc
    else:  # exactly one empty (both empty never reaches here)
        det_precision = det_recall = 0.0
    return {
        "det_precision": det_precision,
        "det_recall": det_recall,
        "n_ref_components": n_rc,
        "n_pred_components": n_pc,
        "det_fn": n_rc - found_ref,
        "det_fp": n_pc - matched_pred,
    }


# --------------------------------------------------------------------------------------------
# Files


def list_segmentations(path: str | os.PathLike) -> dict[str, Path]:
    """Case id (file name without image extension) -> file, for a folder or a single file."""
    path = Path(path)
    if path.is_file():
        return {split_extension(path.name)[0]: path}
    if not path.is_dir():
        raise AutosegError("no such file or folder", path=path, fix="check the path")
    out: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name.startswith((".", TMP_MARK)):
            continue
        stem, ext = split_extension(f.name)
        if not ext:
            continue
        if stem in out:
            raise AutosegError(
                f"two segmentations of case {stem!r}: {out[stem].name} and {f.name}",
                path=path,
                fix="keep one file per case in the folder",
            )
        out[stem] = f
    if not out:
        raise AutosegError(
            "folder holds no segmentation files",
            path=path,
            fix="point to a folder of .nii.gz/.nrrd/.mha/.png/... label maps",
        )
    return out


def present_labels(*arrays: np.ndarray, ignore_label: int | None = None) -> list[int]:
    """Non-zero values present in any of the arrays, sorted (``ignore_label`` left out)."""
    found: set[int] = set()
    for a in arrays:
        found.update(int(v) for v in np.unique(a) if v != 0 and v != ignore_label)
    return sorted(found)


def check_same_grid(pred: Geometry, ref: Geometry, pred_path: Path, ref_path: Path) -> None:
    problem = pred.mismatch(ref)
    if problem:
        raise AutosegError(
            f"prediction and reference {ref_path.name} are on different grids ({problem})",
            path=pred_path,
            fix="resample the prediction onto the reference image's grid "
            "(autoseg predict writes it on the input image's grid)",
        )


def labels_from_dataset_json(folder: Path) -> list[int] | None:
    """Foreground labels from a dataset.json in ``folder`` or its parent (labelsTr/..)."""
    for candidate in (folder, folder.parent):
        if (candidate / "dataset.json").is_file():
            try:
                return sorted(load_dataset_json(candidate).foreground_labels.values())
            except AutosegError:
                return None
    return None


def ignore_label_near(folder: Path) -> int | None:
    """The ``ignore`` label of a dataset.json in ``folder`` or its parent (None: none there)."""
    for candidate in (folder, folder.parent):
        if (candidate / "dataset.json").is_file():
            try:
                return load_dataset_json(candidate).ignore_label
            except AutosegError:
                return None
    return None


def cohorts_near(folder: Path) -> dict[str, str]:
    """Cohorts from a dataset.json in ``folder`` or its parent, if one has any; else {}."""
    for candidate in (folder, folder.parent):
        if (candidate / "dataset.json").is_file():
            try:
                return {
                    c: str(info["cohort"])
                    for c, info in load_dataset_json(candidate).cases.items()
                    if info.get("cohort") is not None
                }
            except (AutosegError, AttributeError):
                return {}
    return {}


def parse_labels(text: str | Sequence[int] | None) -> list[int] | None:
    """``"1,2"`` -> [1, 2]; None stays None."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            values = [int(t) for t in text.replace(" ", "").split(",") if t]
        except ValueError as exc:
            raise AutosegError(
                f"labels {text!r} are not integers", fix="write e.g. --labels 1,2"
            ) from exc
    else:
        values = [int(v) for v in text]
    if not values or any(v <= 0 for v in values):
        raise AutosegError(
            f"labels {text!r} must be positive label values", fix="write e.g. --labels 1,2"
        )
    return sorted(set(values))


# --------------------------------------------------------------------------------------------
# Parallel map


# --------------------------------------------------------------------------------------------
# Folders


@dataclass
class EvaluationResult:
    """Per-case rows (one per case and label), their summary and the files written."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    labels: list[int]
    cases: list[str]
    unmatched_references: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def mean(self, metric: str = "dice", label: int | None = None) -> float:
        """Mean of a metric over cases (and over labels unless one is given), NaN ignored."""
        values = [r[metric] for r in self.rows if label is None or r["label"] == label]
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan


@dataclass(frozen=True)
class _CaseJob:
    case: str
    pred: Path
    ref: Path
    labels: tuple[int, ...] | None
    ignore_label: int | None = None


def _evaluate_case(job: _CaseJob) -> tuple[str, dict[int, dict[str, float]], tuple[float, ...]]:
    pred, pred_geom = read_label_map(job.pred)
    ref, ref_geom = read_label_map(job.ref)
    if pred.shape != ref.shape:
        raise AutosegError(
            f"prediction shape {pred.shape} != reference shape {ref.shape} ({job.ref.name})",
            path=job.pred,
            fix="resample the prediction onto the reference image's grid",
        )
    check_same_grid(pred_geom, ref_geom, job.pred, job.ref)
    ignore = job.ignore_label
    labels = (
        job.labels if job.labels is not None else present_labels(pred, ref, ignore_label=ignore)
    )
    spacing = ref_geom.spacing_zyx
    pred, ref = mask_unlabelled(pred, ref, ignore)
    return job.case, compute_metrics(pred, ref, spacing, labels), spacing


def match_cases(
    pred: str | os.PathLike, ref: str | os.PathLike
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(case, prediction, reference) for every prediction, and references without one.

    Predictions define the case set (a cross-validation fold predicts only its validation
    cases); a prediction without a reference is an error.
    """
    preds = list_segmentations(pred)
    refs = list_segmentations(ref)
    if Path(pred).is_file() and Path(ref).is_file():
        (p,) = preds.values()
        (r,) = refs.values()
        return [(next(iter(refs)), p, r)], []
    missing = sorted(set(preds) - set(refs))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise AutosegError(
            f"{len(missing)} prediction(s) have no reference with the same name: {shown}",
            path=ref,
            fix="name each prediction like its reference (case_001.nii.gz <-> case_001.nii.gz)",
        )
    matched = [(c, preds[c], refs[c]) for c in sorted(preds)]
    return matched, sorted(set(refs) - set(preds))


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    *,
    labels: Sequence[int] | str | None = None,
    cohorts: str | os.PathLike | Mapping[str, str] | None = None,
    out_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    ignore_label: int | None = None,
) -> EvaluationResult:
    """Compare every prediction with its reference; optionally write the three result files.

    ``ignore_label`` (sparse annotation; default: the ``ignore`` label of a dataset.json next
    to the references): reference voxels of that value count for nothing (see
    :func:`compute_metrics`).

    ``labels`` default to the foreground labels of a dataset.json next to the references
    (``ref_dir`` or its parent), else to every label present in any case (a label absent from
    both masks of a case then scores as "both empty"). ``cohorts`` (mapping, CSV or
    dataset.json) default to a dataset.json next to the references when it names cohorts.
    Writes ``metrics.json``, ``metrics_per_case.csv`` and ``summary.csv`` into ``out_dir``.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    matched, unmatched = match_cases(pred_dir, ref_dir)
    label_list = parse_labels(labels)
    ref_folder = ref_dir if ref_dir.is_dir() else ref_dir.parent
    if label_list is None:
        label_list = labels_from_dataset_json(ref_folder)
    cohort_map = load_cohorts(cohorts) if cohorts is not None else cohorts_near(ref_folder)
    if ignore_label is None:
        ignore_label = ignore_label_near(ref_folder)
    if label_list is not None and ignore_label is not None:
        label_list = [v for v in label_list if v != ignore_label]
    jobs = [
        _CaseJob(c, p, r, None if label_list is None else tuple(label_list), ignore_label)
        for c, p, r in matched
    ]
    results = map_cases(
        _evaluate_case, jobs, num_workers=num_workers, progress=progress, desc="evaluate"
    )
    if label_list is None:
        label_list = sorted({lab for _, per_label, _ in results for lab in per_label}) or [1]
    rows: list[dict[str, Any]] = []
    spacings: dict[str, list[float]] = {}
    for case, per_label, spacing in results:
        spacings[case] = list(spacing)
        for label in label_list:
            values = per_label.get(label) or both_empty_metrics()
            rows.append(
                {"case": case, "cohort": cohort_map.get(case, ""), "label": label, **values}
            )
    group_by = "cohort" if any(r["cohort"] for r in rows) else None
    summary = summarize(rows, group_by=group_by, metrics=METRIC_KEYS)
    summary["detection_pooled"] = pooled_detection(rows, label_list)
    result = EvaluationResult(
        rows=rows,
        summary=summary,
        labels=list(label_list),
        cases=[c for c, _, _ in matched],
        unmatched_references=unmatched,
    )
    if out_dir is not None:
        result.files = write_evaluation(
            result, Path(out_dir), pred=pred_dir, ref=ref_dir, spacings=spacings
        )
    return result


def pooled_detection(rows: Sequence[Mapping[str, Any]], labels: Sequence[int]) -> dict[str, Any]:
    """Detection precision/recall from component counts summed over all cases, per label."""
    out: dict[str, Any] = {}
    for label in labels:
        sub = [r for r in rows if r["label"] == label]
        n_ref = sum(r["n_ref_components"] for r in sub)
        n_pred = sum(r["n_pred_components"] for r in sub)
        fn = sum(r["det_fn"] for r in sub)
        fp = sum(r["det_fp"] for r in sub)
        out[str(label)] = {
            "n_ref_components": int(n_ref),
            "n_pred_components": int(n_pred),
            "det_fn": int(fn),
            "det_fp": int(fp),
            "det_precision": 1.0 - fp / n_pred if n_pred else math.nan,
            "det_recall": 1.0 - fn / n_ref if n_ref else math.nan,
        }
    return out


def definitions() -> dict[str, Any]:
    """The settings that define the numbers, stored with every metrics.json."""
    return {
        "surface": "voxels with a face-neighbour (6-/4-neighbourhood) outside the mask; "
        "the image border counts as outside",
        "hd95_mm": "max of the two directed 95th percentiles of surface-to-surface distances",
        "hd_mm": "max of the two directed maximum surface-to-surface distances",
        "assd_mm": "mean of both directed surface distance sets pooled",
        "distances_when_one_mask_empty": "NaN; the *_filled columns hold the image diagonal "
        "in mm instead",
        "both_masks_empty": "Dice/IoU/precision/recall/volume similarity/detection 1, distances 0",
        "detection": f"components (26-connected 3D, 8-connected 2D) match at IoU >= "
        f"{DETECTION_IOU}",
        "failure": f"Dice < {FAILURE_DICE}",
    }


def write_evaluation(
    result: EvaluationResult,
    out_dir: Path,
    *,
    pred: Path,
    ref: Path,
    spacings: Mapping[str, list[float]],
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out_dir / "metrics.json",
        "per_case": out_dir / "metrics_per_case.csv",
        "summary": out_dir / "summary.csv",
    }
    write_csv(files["per_case"], result.rows, ["case", "cohort", "label", *METRIC_KEYS])
    write_csv(files["summary"], summary_table(result.summary))
    payload = {
        "prediction": str(pred),
        "reference": str(ref),
        "labels": result.labels,
        "n_cases": len(result.cases),
        "references_without_prediction": result.unmatched_references,
        "definitions": definitions(),
        "summary": result.summary,
        "per_case": result.rows,
        "spacing_zyx": dict(spacings),
    }
    write_json_atomic(files["json"], json_safe(payload))
    return files
