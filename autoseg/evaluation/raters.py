"""Several raters' masks: consensus, inter-rater agreement, and is the model human-level?

Protocol (documentation/evaluation.md, "Raters"):

1. Cases are the file names every rater folder holds (a case one rater lacks is skipped and
   listed). Masks of one case must share a grid.
2. **Consensus** per case: majority vote (SimpleITK's LabelVotingImageFilter; a voxel whose
   top vote is tied gets background, so with two raters the consensus is their
   intersection) or STAPLE (SimpleITK's STAPLEImageFilter per label, run inside the bounding
   box of all raters' masks of that label grown by :data:`STAPLE_MARGIN` voxels, consensus
   where the posterior probability is >= 0.5; among several labels the most probable wins).
3. **Inter-rater agreement**: every pair of raters (n*(n-1)/2 pairs) compared with
   :func:`autoseg.evaluation.metrics.compute_metrics`; each rater (and the model) also
   against the consensus of all raters (descriptive only: a rater is part of that consensus).
4. With a model's predictions, two baselines, each tested by a one-sided unpaired
   Mann-Whitney U test per metric and label (and cohort), H1 "the model's values are worse"
   (Dice lower; HD95/ASSD higher):

   - ``consensus``: leave-one-out. For each rater i, the consensus of the other raters is the
     reference; rater i and the model are both scored against it (n_cases x n_raters values
     each). Scoring raters against a consensus they helped make would favour them: on
     synthetic data a model exactly as good as the raters was called worse (p < 0.01) by that.
   - ``raters``: the model against each rater compared with every rater against every other.

   p < alpha (0.05) means significantly worse; otherwise the model is called human-level
   (not significantly worse, which is not a proof of equivalence).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import (
    METRIC_KEYS,
    both_empty_metrics,
    check_same_grid,
    compute_metrics,
    list_segmentations,
    map_cases,
    parse_labels,
    present_labels,
    read_label_map,
)
from autoseg.evaluation.summary import describe, load_cohorts, write_csv
from autoseg.evaluation.surface import bounding_slices
from autoseg.io import Geometry, split_extension, write_image, write_json_atomic
from autoseg.io.atomic import json_safe

METHODS = ("majority", "staple")
ALPHA = 0.05
STAPLE_MARGIN = 2
"""Voxels around all raters' masks in which STAPLE runs. Over the whole image the ~99.9 %
background that every rater agrees on would set STAPLE's prior, and so its threshold, for a
nerve that fills 0.1 % of the voxels; two voxels keep the boundary disagreements and little
else."""
TEST_METRICS: tuple[tuple[str, bool], ...] = (
    ("dice", True),
    ("hd95_mm_filled", False),
    ("assd_mm_filled", False),
)
"""Metrics tested for human-level performance, with "higher is better". Distances use the
``_filled`` columns (image diagonal when one mask is empty), so a missed nerve counts as the
worst result rather than dropping out of the sample."""
MODEL = "model"


# --------------------------------------------------------------------------------------------
# Consensus


def _to_sitk(mask: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint16))


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Label with the most votes per voxel; ties (two raters disagreeing) -> background 0."""
    _check_shapes(masks)
    voter = sitk.LabelVotingImageFilter()
    voter.SetLabelForUndecidedPixels(0)
    out = sitk.GetArrayFromImage(voter.Execute([_to_sitk(m) for m in masks]))
    return out.astype(np.asarray(masks[0]).dtype, copy=False)


def staple(
    masks: Sequence[np.ndarray], labels: Sequence[int] | None = None
) -> tuple[np.ndarray, dict[int, dict[str, list[float]]]]:
    """STAPLE consensus and, per label, each rater's estimated sensitivity and specificity."""
    _check_shapes(masks)
    if labels is None:
        labels = present_labels(*masks)
    shape = np.shape(masks[0])
    best_p = np.zeros(shape, dtype=np.float64)
    out = np.zeros(shape, dtype=np.asarray(masks[0]).dtype)
    performance: dict[int, dict[str, list[float]]] = {}
    for label in labels:
        binaries = [np.asarray(m) == label for m in masks]
        box = bounding_slices(np.logical_or.reduce(binaries), margin=STAPLE_MARGIN)
        if box is None:
            continue
        estimator = sitk.STAPLEImageFilter()
        estimator.SetForegroundValue(1)
        prob = sitk.GetArrayFromImage(
            estimator.Execute([_to_sitk(b[box].astype(np.uint8)) for b in binaries])
        )
        prob = np.nan_to_num(prob, nan=0.0)
        region_p = best_p[box]
        wins = (prob >= 0.5) & (prob > region_p)
        region_p[wins] = prob[wins]
        out[box][wins] = label
        performance[int(label)] = {
            "sensitivity": [float(v) for v in estimator.GetSensitivity()],
            "specificity": [float(v) for v in estimator.GetSpecificity()],
        }
    return out, performance


def consensus(
    masks: Sequence[np.ndarray], method: str = "majority", labels: Sequence[int] | None = None
) -> np.ndarray:
    """Consensus label map of several raters' masks by ``"majority"`` or ``"staple"``."""
    if len(masks) < 2:
        raise AutosegError(
            f"a consensus needs at least 2 raters, got {len(masks)}", fix="add rater folders"
        )
    if method == "majority":
        return majority_vote(masks)
    if method == "staple":
        return staple(masks, labels)[0]
    raise AutosegError(f"unknown consensus method {method!r}", fix=f"use one of {METHODS}")


def _check_shapes(masks: Sequence[np.ndarray]) -> None:
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"rater masks differ in shape: {sorted(shapes)}")


# --------------------------------------------------------------------------------------------
# Statistics


def human_level_test(
    model_values: Sequence[float],
    human_values: Sequence[float],
    *,
    higher_is_better: bool,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """One-sided unpaired Mann-Whitney U test of "the model is worse than the humans".

    Returns n, medians, means, U, p, the alternative as text, and the verdict:
    ``"human-level"`` (p >= alpha), ``"worse"`` (p < alpha) or ``"undetermined"`` (no data
    or no variation at all).
    """
    m = np.asarray([v for v in model_values if not math.isnan(v)], dtype=np.float64)
    h = np.asarray([v for v in human_values if not math.isnan(v)], dtype=np.float64)
    alternative = "less" if higher_is_better else "greater"
    out: dict[str, Any] = {
        "n_model": int(m.size),
        "n_human": int(h.size),
        "median_model": float(np.median(m)) if m.size else math.nan,
        "median_human": float(np.median(h)) if h.size else math.nan,
        "mean_model": float(m.mean()) if m.size else math.nan,
        "mean_human": float(h.mean()) if h.size else math.nan,
        "u_statistic": math.nan,
        "p_value": math.nan,
        "alternative": f"model {'lower' if higher_is_better else 'higher'} than raters "
        f"(scipy alternative='{alternative}')",
        "alpha": alpha,
        "verdict": "undetermined",
    }
    if m.size == 0 or h.size == 0:
        return out
    if np.ptp(np.concatenate([m, h])) == 0:
        out["p_value"] = 1.0  # identical values everywhere: not worse
        out["verdict"] = "human-level"
        return out
    from scipy.stats import mannwhitneyu  # ~0.5 s import: only when a test runs

    res = mannwhitneyu(m, h, alternative=alternative)
    out["u_statistic"] = float(res.statistic)
    out["p_value"] = float(res.pvalue)
    if not math.isnan(out["p_value"]):
        out["verdict"] = "worse" if out["p_value"] < alpha else "human-level"
    return out


# --------------------------------------------------------------------------------------------
# Folders


@dataclass
class RaterResult:
    """Tables of one ``autoseg raters`` run (one row per case, label and comparison)."""

    raters: list[str]
    cases: list[str]
    labels: list[int]
    method: str
    pairwise: list[dict[str, Any]]
    pairwise_summary: list[dict[str, Any]]
    vs_consensus: list[dict[str, Any]]
    model_vs_raters: list[dict[str, Any]] = field(default_factory=list)
    leave_one_out: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    skipped_cases: list[str] = field(default_factory=list)
    staple_performance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class _RaterJob:
    case: str
    raters: tuple[Path, ...]
    names: tuple[str, ...]
    pred: Path | None
    method: str
    labels: tuple[int, ...] | None
    consensus_file: Path | None


def _rater_case(job: _RaterJob) -> dict[str, Any]:
    masks, geoms = [], []
    for path in job.raters:
        m, g = read_label_map(path)
        if masks and m.shape != masks[0].shape:
            raise AutosegError(
                f"mask shape {m.shape} != {masks[0].shape} of {job.raters[0]}",
                path=path,
                fix="all raters must segment the same image",
            )
        if geoms:
            check_same_grid(g, geoms[0], path, job.raters[0])
        masks.append(m)
        geoms.append(g)
    geometry: Geometry = geoms[0]
    spacing = geometry.spacing_zyx
    pred = None
    if job.pred is not None:
        pred, pg = read_label_map(job.pred)
        if pred.shape != masks[0].shape:
            raise AutosegError(
                f"prediction shape {pred.shape} != rater mask shape {masks[0].shape}",
                path=job.pred,
                fix="resample the prediction onto the image's grid",
            )
        check_same_grid(pg, geometry, job.pred, job.raters[0])
    labels = list(job.labels) if job.labels is not None else present_labels(*masks)
    staple_info: dict[int, dict[str, list[float]]] = {}
    if job.method == "staple":
        cons, staple_info = staple(masks, labels)
    else:
        cons = majority_vote(masks)
    if job.consensus_file is not None:
        write_image(
            job.consensus_file, cons.astype(np.uint8 if cons.max() < 256 else np.uint16), geometry
        )
    metric_labels = sorted(set(labels) | set(present_labels(cons)))
    if pred is not None and job.labels is None:
        metric_labels = sorted(set(metric_labels) | set(present_labels(pred)))

    def metrics(a: np.ndarray, b: np.ndarray) -> dict[int, dict[str, float]]:
        return compute_metrics(a, b, spacing, metric_labels)

    out: dict[str, Any] = {
        "case": job.case,
        "pairwise": [],
        "vs_consensus": [],
        "vs_raters": [],
        "leave_one_out": [],
    }
    for i, j in itertools.combinations(range(len(masks)), 2):
        out["pairwise"].append((job.names[i], job.names[j], metrics(masks[i], masks[j])))
    for name, m in zip(job.names, masks):
        out["vs_consensus"].append((name, metrics(m, cons)))
    if pred is not None:
        out["vs_consensus"].append((MODEL, metrics(pred, cons)))
        for name, m in zip(job.names, masks):
            out["vs_raters"].append((name, metrics(pred, m)))
        for i, name in enumerate(job.names):
            others = masks[:i] + masks[i + 1 :]
            ref = others[0] if len(others) == 1 else consensus(others, job.method, labels)
            out["leave_one_out"].append((name, name, metrics(masks[i], ref)))
            out["leave_one_out"].append((name, MODEL, metrics(pred, ref)))
    out["staple"] = {str(k): v for k, v in staple_info.items()}
    return out


def _rater_names(folders: Sequence[Path]) -> list[str]:
    names = [f.name or str(f) for f in folders]
    if len(set(names)) < len(names):
        names = [f"rater{i + 1}_{n}" for i, n in enumerate(names)]
    if MODEL in names:
        names = [f"rater_{n}" if n == MODEL else n for n in names]
    return names


def compare_raters(
    rater_dirs: Sequence[str | os.PathLike],
    *,
    pred_dir: str | os.PathLike | None = None,
    method: str = "majority",
    labels: Sequence[int] | str | None = None,
    cohorts: str | os.PathLike | Mapping[str, str] | None = None,
    out_dir: str | os.PathLike | None = None,
    alpha: float = ALPHA,
    num_workers: int | None = None,
    progress: bool = True,
) -> RaterResult:
    """Consensus, inter-rater agreement and (with ``pred_dir``) the human-level tests.

    With ``out_dir``: ``consensus/<case>`` masks, ``pairwise_per_case.csv``,
    ``pairwise.csv`` (one row per rater pair and label), ``vs_consensus_per_case.csv`` and
    ``raters.json``; with ``pred_dir`` also ``model_vs_raters_per_case.csv``,
    ``leave_one_out_per_case.csv`` and ``model_comparison.csv``.
    """
    if len(rater_dirs) < 2:
        raise AutosegError(
            f"--raters needs at least 2 folders, got {len(rater_dirs)}",
            fix="give one folder of masks per rater",
        )
    if method not in METHODS:
        raise AutosegError(f"unknown consensus method {method!r}", fix=f"use one of {METHODS}")
    folders = [Path(d) for d in rater_dirs]
    names = _rater_names(folders)
    per_rater = [list_segmentations(f) for f in folders]
    common = set.intersection(*(set(r) for r in per_rater))
    every = set.union(*(set(r) for r in per_rater))
    preds = list_segmentations(pred_dir) if pred_dir is not None else None
    if preds is not None:
        every |= set(preds)
        common &= set(preds)
    if not common:
        raise AutosegError(
            "no case is present in every rater folder" + (" and the predictions" if preds else ""),
            path=folders[0],
            fix="name each case's mask the same in every folder (case_001.nii.gz ...)",
        )
    cases = sorted(common)
    label_list = parse_labels(labels)
    cohort_map = load_cohorts(cohorts)
    out = None if out_dir is None else Path(out_dir)
    jobs = []
    for case in cases:
        first = per_rater[0][case]
        consensus_file = None
        if out is not None:
            consensus_file = out / "consensus" / f"{case}{split_extension(first.name)[1]}"
        jobs.append(
            _RaterJob(
                case,
                tuple(r[case] for r in per_rater),
                tuple(names),
                None if preds is None else preds[case],
                method,
                None if label_list is None else tuple(label_list),
                consensus_file,
            )
        )
    results = map_cases(
        _rater_case, jobs, num_workers=num_workers, progress=progress, desc="raters"
    )
    if label_list is None:
        found: set[int] = set()
        for r in results:
            everything = r["pairwise"] + r["vs_consensus"] + r["vs_raters"] + r["leave_one_out"]
            for *_, per_label in everything:
                found |= set(per_label)
        label_list = sorted(found) or [1]

    def rows(case: str, keys: dict[str, str], per_label: dict[int, dict[str, float]]):
        return [
            {
                "case": case,
                "cohort": cohort_map.get(case, ""),
                "label": label,
                **keys,
                **(per_label.get(label) or both_empty_metrics()),
            }
            for label in label_list
        ]

    pairwise, vs_cons, vs_raters, loo = [], [], [], []
    for r in results:
        for a, b, pl in r["pairwise"]:
            pairwise += rows(r["case"], {"rater_a": a, "rater_b": b}, pl)
        for who, pl in r["vs_consensus"]:
            vs_cons += rows(r["case"], {"who": who}, pl)
        for who, pl in r["vs_raters"]:
            vs_raters += rows(r["case"], {"rater": who}, pl)
        for left_out, who, pl in r["leave_one_out"]:
            loo += rows(r["case"], {"left_out": left_out, "who": who}, pl)
    result = RaterResult(
        raters=names,
        cases=cases,
        labels=label_list,
        method=method,
        pairwise=pairwise,
        pairwise_summary=pair_summary(pairwise, names, label_list),
        vs_consensus=vs_cons,
        model_vs_raters=vs_raters,
        leave_one_out=loo,
        skipped_cases=sorted(every - common),
        staple_performance={r["case"]: r["staple"] for r in results if r["staple"]},
    )
    if preds is not None:
        result.comparisons = model_comparisons(loo, vs_raters, pairwise, label_list, alpha=alpha)
    if out is not None:
        result.files = write_rater_outputs(result, out, folders, pred_dir, alpha)
    return result


def pair_summary(
    pairwise: Sequence[Mapping[str, Any]], names: Sequence[str], labels: Sequence[int]
) -> list[dict[str, Any]]:
    """One row per rater pair and label: n cases, mean/sd/median of Dice, HD95, ASSD."""
    out = []
    for label in labels:
        for a, b in itertools.combinations(names, 2):
            sub = [
                r
                for r in pairwise
                if r["label"] == label and r["rater_a"] == a and r["rater_b"] == b
            ]
            row: dict[str, Any] = {"label": label, "rater_a": a, "rater_b": b, "n_cases": len(sub)}
            for metric in ("dice", "hd95_mm", "assd_mm", "volume_similarity"):
                stats = describe(r[metric] for r in sub)
                row[f"{metric}_mean"] = stats["mean"]
                row[f"{metric}_sd"] = stats["sd"]
                row[f"{metric}_median"] = stats["median"]
                if metric.endswith("_mm"):
                    row[f"{metric}_n_undefined"] = stats["n_undefined"]
            out.append(row)
    return out


def model_comparisons(
    leave_one_out: Sequence[Mapping[str, Any]],
    model_vs_raters: Sequence[Mapping[str, Any]],
    pairwise: Sequence[Mapping[str, Any]],
    labels: Sequence[int],
    *,
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """Human-level tests per baseline, cohort ("all" first), label and metric.

    ``leave_one_out`` rows have ``who`` = the rater left out or ``"model"``, both scored
    against the consensus of the other raters.
    """
    cohorts = sorted({r["cohort"] for r in leave_one_out if r["cohort"]})
    out = []
    for group in ["all", *cohorts]:

        def keep(r: Mapping[str, Any], group: str = group) -> bool:
            return group == "all" or r["cohort"] == group

        for label in labels:
            model_c = [r for r in leave_one_out if r["who"] == MODEL and r["label"] == label]
            human_c = [r for r in leave_one_out if r["who"] != MODEL and r["label"] == label]
            model_r = [r for r in model_vs_raters if r["label"] == label]
            human_r = [r for r in pairwise if r["label"] == label]
            baselines = {
                "consensus": (model_c, human_c),
                "raters": (model_r, human_r),
            }
            for baseline, (mod, hum) in baselines.items():
                mod = [r for r in mod if keep(r)]
                hum = [r for r in hum if keep(r)]
                for metric, higher in TEST_METRICS:
                    test = human_level_test(
                        [r[metric] for r in mod],
                        [r[metric] for r in hum],
                        higher_is_better=higher,
                        alpha=alpha,
                    )
                    out.append(
                        {
                            "cohort": group,
                            "label": label,
                            "baseline": baseline,
                            "metric": metric,
                            **test,
                        }
                    )
    return out


def write_rater_outputs(
    result: RaterResult,
    out: Path,
    folders: Sequence[Path],
    pred_dir: str | os.PathLike | None,
    alpha: float,
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "pairwise_per_case": out / "pairwise_per_case.csv",
        "pairwise": out / "pairwise.csv",
        "vs_consensus_per_case": out / "vs_consensus_per_case.csv",
        "json": out / "raters.json",
        "consensus": out / "consensus",
    }
    write_csv(
        files["pairwise_per_case"],
        result.pairwise,
        ["case", "cohort", "label", "rater_a", "rater_b", *METRIC_KEYS],
    )
    write_csv(files["pairwise"], result.pairwise_summary)
    write_csv(
        files["vs_consensus_per_case"],
        result.vs_consensus,
        ["case", "cohort", "label", "who", *METRIC_KEYS],
    )
    if pred_dir is not None:
        files["model_vs_raters_per_case"] = out / "model_vs_raters_per_case.csv"
        files["model_comparison"] = out / "model_comparison.csv"
        files["leave_one_out_per_case"] = out / "leave_one_out_per_case.csv"
        write_csv(
            files["leave_one_out_per_case"],
            result.leave_one_out,
            ["case", "cohort", "label", "left_out", "who", *METRIC_KEYS],
        )
        write_csv(
            files["model_vs_raters_per_case"],
            result.model_vs_raters,
            ["case", "cohort", "label", "rater", *METRIC_KEYS],
        )
        write_csv(files["model_comparison"], result.comparisons)
    payload = {
        "raters": {n: str(f) for n, f in zip(result.raters, folders)},
        "prediction": None if pred_dir is None else str(pred_dir),
        "consensus_method": result.method,
        "labels": result.labels,
        "cases": result.cases,
        "skipped_cases": result.skipped_cases,
        "test": {
            "name": "Mann-Whitney U, unpaired, one-sided",
            "h1": "the model's values are worse than the raters' (Dice lower; HD95/ASSD higher)",
            "alpha": alpha,
            "human_level": f"p >= {alpha}: not significantly worse (not proof of equivalence)",
            "baselines": {
                "consensus": "leave-one-out: rater i and the model, each against the "
                "consensus of the raters other than i",
                "raters": "model vs each rater compared with rater vs rater",
            },
            "distances": "hd95/assd use the *_filled values (image diagonal when a mask is empty)",
        },
        "pairwise": result.pairwise_summary,
        "comparisons": result.comparisons,
        "staple_performance": result.staple_performance,
    }
    write_json_atomic(files["json"], json_safe(payload))
    return files
