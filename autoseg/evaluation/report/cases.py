"""Per-case work of the report (in worker processes): the chosen model's out-of-fold segmentation,
its metrics and measurements against the reference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.evaluation.measure import measure_nerve, slice_axis
from autoseg.evaluation.metrics import (
    FAILURE_DICE,
    compute_metrics,
    mask_unlabelled,
    read_label_map,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    Source,
)
from autoseg.layout import ResultsLayout


@dataclass(frozen=True)
class CaseJob:
    case: str
    fold: int
    reference: Path
    image: Path | None
    label_maps: tuple[Path, ...]  # validation/<case><ending>, one per configuration
    probabilities: tuple[Path, ...]  # validation/<case>.npz, one per configuration
    postprocessing: tuple[tuple[int, tuple[tuple[str, Any], ...]], ...]
    labels: tuple[int, ...]
    ignore_label: int | None = None  # sparse annotation: reference voxels that count for nothing


@dataclass
class CaseResult:
    case: str
    fold: int
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    measures: dict[int, dict[str, Any]] = field(default_factory=dict)
    spacing: tuple[float, ...] = ()
    error: str | None = None

    @property
    def mean_dice(self) -> float:
        if self.error or not self.metrics:
            return math.nan
        return float(np.mean([m["dice"] for m in self.metrics.values()]))

    @property
    def failed(self) -> bool:
        return any(m["dice"] < FAILURE_DICE for m in self.metrics.values())


def _load_probabilities(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path) as npz:
            probs = npz["probabilities"]
    except Exception as exc:  # zip/pickle/key errors: a damaged or foreign file
        raise AutosegError(
            f"cannot read out-of-fold probabilities ({type(exc).__name__})", path=path
        ) from exc
    if probs.shape[1:] != shape:
        raise AutosegError(
            f"probabilities have shape {probs.shape}, the reference {shape}", path=path
        )
    return probs


def segment_case(job: CaseJob) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(prediction, reference, spacing) of one case: the configuration's validation label
    map, or for an ensemble the argmax of the mean probabilities; then post-processing."""
    ref, geometry = read_label_map(job.reference)
    spacing = tuple(geometry.spacing_zyx)
    if len(job.label_maps) == 1 and job.label_maps[0].is_file():
        seg, _ = read_label_map(job.label_maps[0])
        if seg.shape != ref.shape:
            raise AutosegError(
                f"prediction shape {seg.shape} != reference shape {ref.shape}",
                path=job.label_maps[0],
            )
    else:
        absent = [p for p in job.probabilities if not p.is_file()]
        if absent:
            raise AutosegError(
                "no out-of-fold prediction",
                path=absent[0],
                fix=f"train and validate fold {job.fold}",
            )
        total: np.ndarray | None = None
        for p in job.probabilities:
            probs = _load_probabilities(p, ref.shape).astype(np.float32)
            total = probs if total is None else total + probs
        seg = np.argmax(total, axis=0).astype(np.uint8)  # ties: the lower class
    from autoseg.postprocessing.rules import apply_postprocessing  # as find-best does

    rules = {str(lab): dict(rule) for lab, rule in job.postprocessing}
    return apply_postprocessing(seg, rules, spacing), ref, spacing


def csa_by_slice(seg: np.ndarray, spacing: Sequence[float], label: int, axis: int):
    """Measurement of one label and its total perpendicular CSA per slice ({slice: mm²})."""
    m = measure_nerve(seg, spacing, label=label, axis=axis if seg.ndim == 3 else None)
    per_slice: dict[int, float] = {}
    for s in m.slices:
        per_slice[s.slice] = per_slice.get(s.slice, 0.0) + s.csa_perpendicular_mm2
    return m, per_slice


def measure_pair(
    ref: np.ndarray, seg: np.ndarray, spacing: Sequence[float], label: int
) -> dict[str, Any]:
    """Volume, mean CSA, length and the CSA profile of reference and prediction, both sliced
    along the reference's axis (so that their profiles share positions)."""
    axis = slice_axis(ref == label, spacing) if ref.ndim == 3 else 0
    out: dict[str, Any] = {"axis": axis, "slice_mm": float(spacing[axis]) if ref.ndim == 3 else 0}
    for key, arr in (("ref", ref), ("pred", seg)):
        m, per_slice = csa_by_slice(arr, spacing, label, axis)
        out[key] = {
            "volume_mm3": m.volume_mm3,
            "csa_mean_mm2": float(np.mean(list(per_slice.values()))) if per_slice else math.nan,
            "length_mm": m.length_mm,
            "n_branches": m.n_branches,
            "profile": per_slice,
        }
    return out


def score_case(job: CaseJob) -> CaseResult:
    """Metrics and measurements of one case; a missing or broken file becomes an error note."""
    try:
        seg, ref, spacing = segment_case(job)
        seg, ref = mask_unlabelled(seg, ref, job.ignore_label)
        metrics = compute_metrics(seg, ref, spacing, job.labels)
        measures = {lab: measure_pair(ref, seg, spacing, lab) for lab in job.labels}
    except (AutosegError, OSError, ValueError) as exc:
        return CaseResult(job.case, job.fold, error=str(exc))
    return CaseResult(job.case, job.fold, metrics, measures, spacing)


def case_jobs(data: ReportData, source: Source) -> list[CaseJob]:
    ending = data.ds.file_ending
    images = {c.case_id: c.images[0] if c.images else None for c in data.cases}
    rules = tuple(
        (lab, tuple(sorted(rule.items()))) for lab, rule in sorted(source.postprocessing.items())
    )
    jobs = []
    for case, fold in source.case_fold.items():
        val = [ResultsLayout(data.res).validation_dir(c, fold) for c in source.configs]
        jobs.append(
            CaseJob(
                case=case,
                fold=fold,
                reference=data.raw / "labelsTr" / f"{case}{ending}",
                image=images.get(case),
                label_maps=tuple(v / f"{case}{ending}" for v in val),
                probabilities=tuple(v / f"{case}.npz" for v in val),
                postprocessing=rules,
                labels=tuple(sorted(data.labels)),
                ignore_label=data.ds.ignore_label,
            )
        )
    return jobs
