"""Tests for autoseg.evaluation metrics, summaries and ``autoseg evaluate``.

Hand-computed cases, the empty-mask rules, a brute-force surface-distance reference, and an
independent check against SimpleITK's overlap and Hausdorff filters.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from autoseg.cli import evaluate as evaluate_cli
from autoseg.errors import AutosegError
from autoseg.evaluation import (
    compute_metrics,
    dice,
    evaluate_folders,
    hausdorff_distance,
    summarize,
    surface_voxels,
)
from autoseg.evaluation.metrics import DETECTION_IOU, binary_metrics, detection_metrics
from autoseg.io import DatasetJson, Geometry, write_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


# --------------------------------------------------------------------------------------------
# Hand-computed values


def test_dice_of_two_boxes_is_exact():
    a = _box((6, 20, 20), (1, 2, 2), (5, 12, 12))  # 4*10*10 = 400 voxels
    b = _box((6, 20, 20), (1, 7, 2), (5, 17, 12))  # shifted 5 rows: overlap 4*5*10 = 200
    assert dice(a, b, 1) == pytest.approx(2 * 200 / 800)
    m = compute_metrics(a, b, (3.0, 0.5, 0.5), [1])[1]
    assert m["dice"] == pytest.approx(0.5)
    assert m["iou"] == pytest.approx(200 / 600)
    assert m["voe"] == pytest.approx(1 - 200 / 600)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["volume_similarity"] == pytest.approx(1.0)
    assert m["volume_ref_mm3"] == pytest.approx(400 * 3 * 0.25)
    assert m["failure"] == 0.0


def test_precision_recall_and_volume_similarity_differ_for_nested_boxes():
    ref = _box((4, 10, 10), (0, 0, 0), (4, 10, 10))  # 400
    pred = _box((4, 10, 10), (0, 0, 0), (4, 5, 10))  # 200 inside ref
    m = compute_metrics(pred, ref, (1, 1, 1), [1])[1]
    assert m["precision"] == 1.0
    assert m["recall"] == 0.5
    assert m["volume_similarity"] == pytest.approx(1 - 200 / 600)
    assert m["dice"] == pytest.approx(400 / 600)


@pytest.mark.parametrize(("axis", "spacing"), [(0, 3.0), (1, 0.6), (2, 0.4)])
def test_one_voxel_shift_gives_hd95_equal_to_the_spacing_along_that_axis(axis, spacing):
    sp = [3.0, 0.6, 0.4]
    sp[axis] = spacing
    a = _box((10, 24, 24), (3, 6, 6), (7, 16, 16))
    b = np.roll(a, 1, axis=axis)
    m = compute_metrics(b, a, sp, [1])[1]
    assert m["hd95_mm"] == pytest.approx(spacing)
    assert m["hd_mm"] == pytest.approx(spacing)
    assert 0 < m["assd_mm"] < spacing


def test_single_pixel_distances_in_2d_with_anisotropic_spacing():
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[5, 5] = 1
    b[5, 7] = 1  # two columns of 0.5 mm
    m = compute_metrics(a, b, (1.0, 0.5), [1])[1]
    assert m["hd95_mm"] == pytest.approx(1.0)
    assert m["assd_mm"] == pytest.approx(1.0)
    assert m["dice"] == 0.0
    assert m["failure"] == 1.0


def _brute_force(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float, float]:
    """Surfaces by scipy's erosion and all-pairs distances: independent of surface.py."""
    cross = ndi.generate_binary_structure(a.ndim, 1)
    sa = a & ~ndi.binary_erosion(a, cross, border_value=0)
    sb = b & ~ndi.binary_erosion(b, cross, border_value=0)
    pa = np.argwhere(sa) * np.asarray(spacing)
    pb = np.argwhere(sb) * np.asarray(spacing)
    d = cdist(pa, pb)
    d_ab, d_ba = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    hd = max(d_ab.max(), d_ba.max())
    assd = (d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size)
    return hd95, hd, assd


def _blobs(seed: int, shape=(12, 40, 40), sigma=2.0):
    """Two correlated random blobs without holes, touching the image border sometimes."""
    rng = np.random.default_rng(seed)
    base = ndi.gaussian_filter(rng.random(shape), sigma)
    noise = ndi.gaussian_filter(rng.random(shape), sigma)
    a = base > np.quantile(base, 0.9)
    b = (0.8 * base + 0.2 * noise) > np.quantile(0.8 * base + 0.2 * noise, 0.88)
    fill = np.ones((3,) * len(shape), bool)
    return ndi.binary_fill_holes(a, fill), ndi.binary_fill_holes(b, fill)


@pytest.mark.parametrize("seed", range(4))
def test_surface_distances_match_a_brute_force_reference(seed):
    a, b = _blobs(seed)
    spacing = (3.0, 0.7, 0.45)
    m = compute_metrics(a.astype(np.uint8), b.astype(np.uint8), spacing, [1])[1]
    hd95, hd, assd = _brute_force(a, b, spacing)
    assert m["hd95_mm"] == pytest.approx(hd95, rel=1e-9)
    assert m["hd_mm"] == pytest.approx(hd, rel=1e-9)
    assert m["assd_mm"] == pytest.approx(assd, rel=1e-9)


def test_surface_counts_voxels_on_the_image_border():
    m = np.ones((3, 4, 5), bool)
    s = surface_voxels(m)
    assert s.sum() == m.size - 1 * 2 * 3  # only the 1x2x3 inner block is interior


def test_metrics_are_symmetric_where_they_should_be():
    a, b = _blobs(7)
    spacing = (2.0, 0.5, 0.5)
    ab = compute_metrics(a.astype(np.uint8), b.astype(np.uint8), spacing, [1])[1]
    ba = compute_metrics(b.astype(np.uint8), a.astype(np.uint8), spacing, [1])[1]
    for key in ("dice", "iou", "volume_similarity", "hd95_mm", "hd_mm", "assd_mm"):
        assert ab[key] == pytest.approx(ba[key])
    assert ab["precision"] == pytest.approx(ba["recall"])
    assert ab["hd95_mm"] <= ab["hd_mm"]


# --------------------------------------------------------------------------------------------
# SimpleITK as an independent implementation


def _itk(mask: np.ndarray, spacing_zyx) -> sitk.Image:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    return img


@pytest.mark.parametrize("seed", range(5))
def test_against_simpleitk_overlap_and_hausdorff_filters(seed):
    a, b = _blobs(100 + seed)
    spacing = (3.5, 0.6, 0.5)
    m = compute_metrics(a.astype(np.uint8), b.astype(np.uint8), spacing, [1])[1]
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_itk(a, spacing), _itk(b, spacing))
    assert m["dice"] == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)
    assert m["iou"] == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12)
    # ITK's volume similarity is the signed 2(|A|-|B|)/(|A|+|B|); ours is 1 - |that|/2.
    assert m["volume_similarity"] == pytest.approx(1 - abs(overlap.GetVolumeSimilarity()) / 2)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(_itk(a, spacing), _itk(b, spacing))
    # ITK's maximum uses all foreground voxels; for hole-free blobs it is the surfaces' maximum.
    assert hausdorff_distance(a, b, spacing, percentile=100) == pytest.approx(
        hausdorff.GetHausdorffDistance(), rel=1e-6
    )
    assert m["hd_mm"] == pytest.approx(hausdorff.GetHausdorffDistance(), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Empty masks


def test_both_empty_scores_perfectly():
    z = np.zeros((4, 8, 8), np.uint8)
    m = compute_metrics(z, z, (3, 0.5, 0.5), [1])[1]
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["voe"] == 0.0
    assert m["hd95_mm"] == 0.0 and m["assd_mm"] == 0.0 and m["hd95_mm_filled"] == 0.0
    assert m["det_precision"] == 1.0 and m["det_recall"] == 1.0
    assert m["failure"] == 0.0
    assert dice(z, z, 1) == 1.0


@pytest.mark.parametrize("empty", ["pred", "ref"])
def test_one_empty_gives_zero_overlap_nan_distance_and_a_filled_worst_case(empty):
    shape, spacing = (4, 8, 10), (3.0, 0.5, 0.4)
    full = _box(shape, (1, 2, 2), (3, 5, 6))
    zero = np.zeros(shape, np.uint8)
    pred, ref = (zero, full) if empty == "pred" else (full, zero)
    m = compute_metrics(pred, ref, spacing, [1])[1]
    assert m["dice"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["volume_similarity"] == 0.0
    assert math.isnan(m["hd95_mm"]) and math.isnan(m["assd_mm"]) and math.isnan(m["hd_mm"])
    diagonal = math.sqrt((4 * 3.0) ** 2 + (8 * 0.5) ** 2 + (10 * 0.4) ** 2)
    assert m["hd95_mm_filled"] == pytest.approx(diagonal)
    assert m["assd_mm_filled"] == pytest.approx(diagonal)
    assert m["failure"] == 1.0
    assert m["det_recall"] == 0.0 and m["det_precision"] == 0.0


def test_labels_are_scored_separately_and_an_absent_label_is_both_empty():
    ref = _box((4, 10, 10), (0, 0, 0), (4, 4, 4))
    ref[:, 6:, 6:] = 2
    pred = ref.copy()
    pred[pred == 2] = 0
    res = compute_metrics(pred, ref, (1, 1, 1), [1, 2, 3])
    assert res[1]["dice"] == 1.0
    assert res[2]["dice"] == 0.0
    assert res[3]["dice"] == 1.0 and res[3]["hd95_mm"] == 0.0


# --------------------------------------------------------------------------------------------
# Detection


def test_detection_counts_found_missed_and_spurious_components():
    shape = (6, 40, 40)
    ref = np.zeros(shape, bool)
    ref[1:5, 2:8, 2:8] = True  # A: found by a good prediction
    ref[1:5, 20:26, 20:26] = True  # B: only touched (IoU < 0.1)
    pred = np.zeros(shape, bool)
    pred[1:5, 3:9, 2:8] = True  # IoU with A = 5/7 ~ 0.71
    pred[1:2, 25:27, 25:27] = True  # touches B in 1 voxel -> IoU tiny
    pred[1:5, 32:36, 32:36] = True  # spurious far away
    d = detection_metrics(pred, ref)
    assert d["n_ref_components"] == 2 and d["n_pred_components"] == 3
    assert d["det_recall"] == pytest.approx(0.5)
    assert d["det_precision"] == pytest.approx(1 / 3)
    assert d["det_fn"] == 1 and d["det_fp"] == 2


def test_detection_threshold_is_inclusive_at_the_documented_iou():
    ref = np.zeros((1, 1, 100), bool)
    ref[0, 0, :100] = True
    pred = np.zeros_like(ref)
    pred[0, 0, :10] = True  # IoU exactly 10/100
    assert DETECTION_IOU == 0.1
    assert detection_metrics(pred, ref)["det_recall"] == 1.0
    pred[0, 0, 9] = False  # IoU 0.09
    assert detection_metrics(pred, ref)["det_recall"] == 0.0


def test_a_prediction_in_two_pieces_finds_the_nerve_once():
    ref = np.zeros((10, 10, 10), bool)
    ref[:, 4:6, 4:6] = True
    pred = ref.copy()
    pred[5] = False
    d = detection_metrics(pred, ref)
    assert d["det_recall"] == 1.0 and d["det_precision"] == 1.0 and d["n_pred_components"] == 2


# One nerve section that cc3d 4.1.1 labels wrongly when handed the bool mask with
# 8-connectivity (autoseg.io.components): N = 1 but background pixel (3, 1) gets label 2,
# which crashed detection_metrics ("IndexError: index 3 is out of bounds for axis 0 with
# size 3") in plan-and-train's end-of-fold validation. Found by a seeded search over
# smoothed-noise masks with a one-pixel margin, the crop binary_metrics makes.
CC3D_BOOL_TRAP = """
.........
.##..#...
..#####..
...#####.
...#####.
...#####.
....####.
.........
"""


def test_detection_on_a_mask_that_raw_cc3d_mislabels():
    ref = np.array([[c == "#" for c in row] for row in CC3D_BOOL_TRAP.split()])
    raw, n = cc3d.connected_components(ref, connectivity=8, return_N=True)
    if raw.max() == n and np.array_equal(raw > 0, ref):
        pytest.skip(
            "the installed cc3d labels this bool mask correctly (fixed upstream?), so this "
            "case no longer exercises the bug; find a new one with a random search"
        )
    assert ndi.label(ref, np.ones((3, 3)))[1] == 1
    perfect = {"n_ref_components": 1, "n_pred_components": 1, "det_fn": 0, "det_fp": 0}
    perfect |= {"det_recall": 1.0, "det_precision": 1.0}
    assert detection_metrics(ref.copy(), ref) == perfect
    # The way evaluation calls it: whole images, cropped to the mask with a 1-pixel margin.
    image = np.pad(ref[1:-1, 1:-1], ((5, 9), (3, 12)))
    metrics = binary_metrics(image.copy(), image, (0.5, 0.5))
    assert {k: metrics[k] for k in perfect} == perfect


# --------------------------------------------------------------------------------------------
# Summaries


def test_summarize_overall_and_per_cohort():
    rows = []
    values = {"A": [0.9, 0.8, 0.7], "B": [0.2, 0.4]}
    for cohort, vs in values.items():
        for i, v in enumerate(vs):
            rows.append(
                {
                    "case": f"{cohort}{i}",
                    "cohort": cohort,
                    "label": 1,
                    "dice": v,
                    "hd95_mm": math.nan if v < 0.3 else 1.0,
                }
            )
    s = summarize(rows, group_by="cohort")
    overall = s["overall"]["1"]["dice"]
    all_values = [0.9, 0.8, 0.7, 0.2, 0.4]
    assert overall["n"] == 5
    assert overall["mean"] == pytest.approx(np.mean(all_values))
    assert overall["sd"] == pytest.approx(np.std(all_values, ddof=1))
    assert overall["median"] == pytest.approx(0.7)
    assert overall["iqr"] == pytest.approx(np.percentile(all_values, 75) - 0.4)
    assert s["groups"]["A"]["1"]["dice"]["mean"] == pytest.approx(0.8)
    assert s["groups"]["B"]["1"]["dice"]["median"] == pytest.approx(0.3)
    assert s["groups"]["B"]["1"]["hd95_mm"]["n_undefined"] == 1
    assert s["groups"]["B"]["1"]["hd95_mm"]["n"] == 1
    assert s["overall"]["1"]["hd95_mm"]["mean"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Folders and CLI


SPACING = (3.0, 0.5, 0.5)


def _write_cases(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], ending=".nii.gz"):
    pred_dir, ref_dir = root / "pred", root / "labelsTr"
    for case, (pred, ref) in cases.items():
        geom = Geometry.default(ref.shape, SPACING if ref.ndim == 3 else None)
        write_image(pred_dir / f"{case}{ending}", pred, geom)
        write_image(ref_dir / f"{case}{ending}", ref, geom)
    return pred_dir, ref_dir


def _three_cases():
    shape = (5, 16, 16)
    ref = _box(shape, (1, 4, 4), (4, 10, 10))
    ref2 = ref.copy()
    ref2[1:4, 12:15, 12:15] = 2
    return {
        "c1": (ref.copy(), ref.copy()),  # perfect
        "c2": (np.roll(ref2, 1, axis=2), ref2),  # shifted one column
        "c3": (np.zeros(shape, np.uint8), ref.copy()),  # missed
    }


def test_evaluate_folders_writes_files_and_per_cohort_summaries(tmp_path):
    pred_dir, ref_dir = _write_cases(tmp_path, _three_cases())
    cohort_csv = tmp_path / "cohorts.csv"
    cohort_csv.write_text("case,cohort\nc1,healthy\nc2,healthy\nc3,patient\n")
    out = tmp_path / "eval"
    res = evaluate_folders(
        pred_dir, ref_dir, cohorts=cohort_csv, out_dir=out, num_workers=1, progress=False
    )
    assert res.labels == [1, 2]
    assert len(res.rows) == 3 * 2
    by = {(r["case"], r["label"]): r for r in res.rows}
    assert by[("c1", 1)]["dice"] == 1.0
    assert by[("c1", 2)]["dice"] == 1.0  # label 2 in neither: both empty
    assert by[("c2", 1)]["hd95_mm"] == pytest.approx(0.5)
    assert by[("c3", 1)]["failure"] == 1.0 and math.isnan(by[("c3", 1)]["hd95_mm"])
    assert set(res.summary["groups"]) == {"healthy", "patient"}
    assert res.summary["groups"]["patient"]["1"]["dice"]["mean"] == 0.0
    assert res.mean("failure", label=1) == pytest.approx(1 / 3)
    for name in ("metrics.json", "metrics_per_case.csv", "summary.csv"):
        assert (out / name).is_file()
    data = json.loads((out / "metrics.json").read_text())  # strict JSON: no NaN
    assert data["n_cases"] == 3
    assert data["summary"]["overall"]["1"]["hd95_mm"]["n_undefined"] == 1
    with open(out / "metrics_per_case.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6
    c3 = next(r for r in table if r["case"] == "c3" and r["label"] == "1")
    assert c3["hd95_mm"] == "" and float(c3["hd95_mm_filled"]) > 0 and c3["cohort"] == "patient"
    with open(out / "summary.csv") as fh:
        summary_rows = list(csv.DictReader(fh))
    groups = {r["group"] for r in summary_rows}
    assert groups == {"all", "healthy", "patient"}
    assert not list(out.glob(".partial-*"))


def test_parallel_evaluation_gives_the_same_rows(tmp_path):
    pred_dir, ref_dir = _write_cases(tmp_path, _three_cases())
    serial = evaluate_folders(pred_dir, ref_dir, num_workers=1, progress=False)
    parallel = evaluate_folders(pred_dir, ref_dir, num_workers=2, progress=False)
    assert [r["case"] for r in serial.rows] == [r["case"] for r in parallel.rows]
    for a, b in zip(serial.rows, parallel.rows):
        assert a["dice"] == b["dice"]


def test_labels_and_cohorts_come_from_dataset_json_next_to_the_references(tmp_path):
    pred_dir, _ = _write_cases(tmp_path, _three_cases())
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        num_training=3,
        file_ending=".nii.gz",
        cases={"c1": {"cohort": "A"}, "c2": {"cohort": "B"}, "c3": {"cohort": "B"}},
    ).save(tmp_path)
    res = evaluate_folders(pred_dir, tmp_path / "labelsTr", num_workers=1, progress=False)
    assert res.labels == [1]
    assert set(res.summary["groups"]) == {"A", "B"}


def test_predictions_define_the_cases_and_need_references(tmp_path):
    cases = _three_cases()
    pred_dir, ref_dir = _write_cases(tmp_path, cases)
    (pred_dir / "c3.nii.gz").unlink()
    res = evaluate_folders(pred_dir, ref_dir, num_workers=1, progress=False)
    assert res.cases == ["c1", "c2"] and res.unmatched_references == ["c3"]
    geom = Geometry.default(cases["c1"][0].shape, SPACING)
    write_image(pred_dir / "extra.nii.gz", cases["c1"][0], geom)
    with pytest.raises(AutosegError, match="no reference"):
        evaluate_folders(pred_dir, ref_dir, num_workers=1, progress=False)


def test_grid_mismatch_is_a_clear_error(tmp_path):
    ref = _box((4, 8, 8), (1, 1, 1), (3, 5, 5))
    write_image(tmp_path / "r" / "c.nii.gz", ref, Geometry.default(ref.shape, SPACING))
    write_image(tmp_path / "p" / "c.nii.gz", ref, Geometry.default(ref.shape, (4.0, 0.5, 0.5)))
    with pytest.raises(AutosegError, match="different grids"):
        evaluate_folders(tmp_path / "p", tmp_path / "r", num_workers=1, progress=False)


def test_2d_png_masks_and_single_files(tmp_path):
    ref = np.zeros((30, 40), np.uint8)
    ref[10:20, 10:20] = 1
    pred = np.roll(ref, 2, axis=1)
    _write_cases(tmp_path, {"us1": (pred, ref)}, ending=".png")
    res = evaluate_folders(
        tmp_path / "pred" / "us1.png", tmp_path / "labelsTr" / "us1.png", progress=False
    )
    assert res.cases == ["us1"]
    assert res.rows[0]["dice"] == pytest.approx(0.8)
    assert res.rows[0]["hd95_mm"] == pytest.approx(2.0)  # pixels: PNG stores no spacing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoseg")
    sub = parser.add_subparsers(dest="command")
    evaluate_cli.register(sub)
    return parser


def test_cli_writes_files_and_prints_a_summary(tmp_path, capsys):
    pred_dir, ref_dir = _write_cases(tmp_path, _three_cases())
    out = tmp_path / "out"
    args = _parser().parse_args(
        ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", "1",
         "--out", str(out), "--workers", "1", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "label 1" in text and "failures (Dice<0.5) 1/3" in text
    assert json.loads((out / "metrics.json").read_text())["labels"] == [1]


def test_cli_bad_labels_raise_a_user_error(tmp_path):
    pred_dir, ref_dir = _write_cases(tmp_path, _three_cases())
    args = _parser().parse_args(
        ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", "nerve"]
    )
    with pytest.raises(AutosegError, match="--labels"):
        args.func(args)


@pytest.mark.skipif(not (DATA / "usgra_seg" / "dataset").is_dir(), reason="no shared data")
def test_real_ultrasound_mask_against_itself_and_a_shift(tmp_path):
    masks = sorted((DATA / "usgra_seg" / "dataset" / "masks").glob("*.png"))[:1]
    from autoseg.io import read_image

    ref = read_image(masks[0]).array
    res = compute_metrics(ref, ref, (1.0, 1.0), [1, 2])
    assert res[1]["dice"] == 1.0 and res[1]["hd95_mm"] == 0.0
    shifted = compute_metrics(np.roll(ref, 3, axis=1), ref, (1.0, 1.0), [1])[1]
    assert shifted["hd_mm"] == pytest.approx(3.0)
