"""Pure helpers of benchmarks/bench_accuracy.py: budget fitting of nnU-Net's schedule, the
shared metric averaging, and the compared figures. Nothing here trains or needs nnunetv2."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import bench_accuracy as ba


def test_budget_label_and_run_label():
    assert ba.budget_label("10m") == "10m"
    assert ba.budget_label("1h 30m") == "1h30m"
    assert ba.budget_label("600") == "600s"
    assert ba.run_label("phantom_mri3d", None, "10m") == "phantom_mri3d_10m"
    assert ba.run_label("phantom_mri3d", 10, "1m") == "phantom_mri3d_n10_1m"
    with pytest.raises(ValueError):
        ba.budget_label(" ")


def test_val_iterations_scale_with_epoch_length():
    assert ba.val_iterations_for(250) == 50
    assert ba.val_iterations_for(25) == 5
    assert ba.val_iterations_for(1) == 1  # never 0: the pseudo Dice needs a value


def test_probe_stops_after_min_iterations_and_share():
    assert not ba.probe_should_stop(1, 100.0, 5.0)  # too few iterations timed
    assert not ba.probe_should_stop(3, 1.0, 5.0)  # not yet its share of the budget
    assert ba.probe_should_stop(3, 5.0, 5.0)
    assert ba.probe_should_stop(250, 0.1, 5.0)  # a full epoch is always enough


def test_mean_iteration_leaves_out_the_first():
    assert ba.mean_iteration_s([10.0, 1.0, 3.0]) == pytest.approx(2.0)
    assert ba.mean_iteration_s([4.0]) == 4.0
    with pytest.raises(ValueError):
        ba.mean_iteration_s([])


def test_fit_keeps_250_iterations_when_an_epoch_fits():
    # 0.1 s/it, 0.03 s/val it, 1 s overhead -> 25 + 1.5 + 1 = 27.5 s per epoch
    s = ba.fit_nnunet_schedule(1000.0, 0.1, 0.03, 1.0)
    assert s.iterations_per_epoch == 250 and s.val_iterations == 50
    assert s.epochs == int(1000.0 * ba.FIT_SAFETY // 27.5)
    assert s.epochs * s.epoch_s <= 1000.0


def test_fit_caps_at_nnunet_epochs():
    s = ba.fit_nnunet_schedule(1e9, 0.01, 0.01, 0.0)
    assert s.epochs == ba.NNUNET_MAX_EPOCHS - 1  # plus the probe epoch = 1000


def test_fit_shortens_epochs_when_none_fits():
    # 2 s/it: one 250-iteration epoch needs > 500 s; 300 s left
    s = ba.fit_nnunet_schedule(300.0, 2.0, 0.6, 0.5)
    assert s.epochs == ba.SHORT_SCHEDULE_EPOCHS
    assert 1 <= s.iterations_per_epoch < 250
    assert s.epochs * s.epoch_s <= 300.0
    # one more iteration per epoch would not fit
    more = ba._epoch_cost(s.iterations_per_epoch + 1, 2.0, 0.6, 0.5)
    assert s.epochs * more > 300.0 * ba.FIT_SAFETY


def test_fit_uses_fewer_epochs_when_ten_do_not_fit():
    # 20 s/it, 6 s/val it, 1 s overhead, 60 s: ten epochs cannot hold one iteration each
    s = ba.fit_nnunet_schedule(60.0, 20.0, 6.0, 1.0)
    assert 1 <= s.epochs < ba.SHORT_SCHEDULE_EPOCHS
    assert s.iterations_per_epoch >= 1
    assert s.epochs * s.epoch_s <= 60.0


def test_fit_nothing_left():
    s = ba.fit_nnunet_schedule(5.0, 20.0, 6.0, 1.0)
    assert (s.epochs, s.iterations_per_epoch, s.iterations) == (0, 0, 0)
    assert ba.fit_nnunet_schedule(-3.0, 1.0, 1.0, 0.0).epochs == 0
    with pytest.raises(ValueError):
        ba.fit_nnunet_schedule(10.0, 0.0, 1.0, 0.0)


def test_paired_difference_uses_common_folds():
    diff = ba.paired_difference({0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.6, 1: 0.6})
    assert diff is not None
    mean, sd, n = diff
    assert n == 2 and mean == pytest.approx(0.15) and sd == pytest.approx(math.sqrt(0.005))
    assert ba.paired_difference({0: 1.0}, {1: 1.0}) is None
    assert ba.paired_difference({0: 1.0}, {0: 0.5})[1] is None
    text = ba.describe_difference((0.15, 0.07, 2))
    assert text.startswith("autoseg - nnU-Net +0.150 ± 0.070") and "2 folds" in text
    assert "no fold" in ba.describe_difference(None)


def test_summary_dice_reads_foreground_mean():
    assert ba.summary_dice({"foreground_mean": {"Dice": 0.75}}) == 0.75
    assert ba.summary_dice({"foreground_mean": {"Dice": float("nan")}}) is None
    assert ba.summary_dice({}) is None


def test_nnunet_scores_average_like_autoseg(tmp_path):
    """metrics.json written for nnU-Net's predictions is read by accuracy_cv.fold_scores, the
    same averaging as autoseg's folds (mean over labels per case, then over cases)."""
    from autoseg.evaluation.metrics import compute_metrics
    from benchmarks.accuracy_cv import fold_scores

    ref = np.zeros((4, 16, 16), np.uint8)
    ref[1:3, 4:8, 4:8] = 1
    ref[1:3, 10:12, 10:12] = 2
    pred_a = ref.copy()  # perfect
    pred_b = ref.copy()
    pred_b[pred_b == 2] = 0  # label 2 missed entirely
    per_case = {
        "a": compute_metrics(pred_a, ref, (2.0, 1.0, 1.0), [1, 2]),
        "b": compute_metrics(pred_b, ref, (2.0, 1.0, 1.0), [1, 2]),
    }
    doc = ba.autoseg_metrics_document(per_case)
    path = tmp_path / "Trainer__Plans__3d" / "fold_0" / "validation" / "metrics.json"
    ba.write_json(path, doc)
    json.loads(path.read_text())  # NaN-free JSON
    rows = fold_scores(tmp_path, "Trainer__Plans__3d", [0])
    assert rows[0]["n_cases"] == 2
    assert rows[0]["dice"] == pytest.approx((1.0 + 0.5) / 2)
    assert rows[0]["hd95"] > 0  # case b: label 2 empty -> the image diagonal


def test_choose_autoseg_config():
    recs = [
        {"configs": {"2d": {"dice": 0.7}, "3d_fullres": {"dice": 0.8}}},
        {"configs": {"2d": {"dice": 0.7}, "3d_fullres": {"dice": 0.7}}},
    ]
    assert ba.choose_autoseg_config(recs, "2d") == "2d"
    assert ba.choose_autoseg_config(recs, "2d+3d_fullres") == "3d_fullres"  # 0.75 > 0.70
    assert ba.choose_autoseg_config(recs[:1], None) == "3d_fullres"
    assert ba.choose_autoseg_config([], None) is None


def test_build_results_means_and_notes():
    a = {
        0: {"dice": 0.8, "hd95": 2.0, "iterations": 2000, "train_s": 50.0},
        1: {"dice": 0.9, "hd95": 1.0, "iterations": 2100, "train_s": 52.0},
    }
    n = {
        0: {"dice": 0.4, "hd95": 9.0, "iterations": 10, "train_s": 59.0, "summary_dice": 0.41},
        1: {"dice": 0.6, "hd95": 7.0, "iterations": 12, "train_s": 58.0, "summary_dice": 0.62},
    }
    dice, hd95, its, secs = ba.build_results("thigh 1m/fold", a, n)
    assert dice.autoseg == pytest.approx(0.85) and dice.nnunet == pytest.approx(0.5)
    assert dice.better == "higher" and dice.target == 1.0 and dice.met is True
    assert dice.runs == {"autoseg": [0.8, 0.9], "nnunet": [0.4, 0.6]}
    assert "+0.350 ± 0.071" in dice.note and "0.410, 0.620" in dice.note
    assert hd95.better == "lower" and hd95.ratio == pytest.approx(1.5 / 8.0) and hd95.met
    assert its.autoseg == 2050 and its.nnunet == 11 and its.target is None
    assert secs.unit == "s" and secs.met is None
    json.dumps([r.to_dict() for r in (dice, hd95, its, secs)])


def test_build_results_one_system_only():
    dice, hd95, _, _ = ba.build_results("x", {0: {"dice": 0.5, "hd95": 3.0}}, {})
    assert dice.autoseg == 0.5 and dice.nnunet is None and dice.ratio is None
    assert "no fold measured by both" in dice.note


def test_make_subset_keeps_first_cases(tmp_path):
    from autoseg.io import list_cases, load_dataset_json, write_image
    from autoseg.io.dataset import DatasetJson
    from autoseg.io.image import Geometry

    src = tmp_path / "raw" / "931_Toy"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    geom = Geometry.default((2, 3, 3), (1.0, 1.0, 1.0))
    for i in range(7):
        write_image(src / "imagesTr" / f"c{i}_0000.nii.gz", np.zeros((2, 3, 3), np.float32), geom)
        write_image(src / "labelsTr" / f"c{i}.nii.gz", np.zeros((2, 3, 3), np.uint8), geom)
    DatasetJson(
        {"0": "T2"},
        {"background": 0, "nerve": 1},
        7,
        ".nii.gz",
        name="Toy",
        cases={f"c{i}": {"subject": f"s{i // 2}"} for i in range(7)},
    ).save(src)
    sub = ba.make_subset(tmp_path, "931_Toy", 5)
    assert sub == "971_ToyN5"
    ds = load_dataset_json(tmp_path / "raw" / sub)
    assert ds.num_training == 5 and sorted(ds.cases) == [f"c{i}" for i in range(5)]
    assert [c.case_id for c in list_cases(tmp_path / "raw" / sub)] == [f"c{i}" for i in range(5)]
    assert ba.make_subset(tmp_path, "931_Toy", 5) == sub  # done once
    with pytest.raises(SystemExit):
        ba.make_subset(tmp_path, "931_Toy", 3)  # fewer cases than folds


def test_describe_nnunet_training():
    cut = {"iterations": 1, "iteration_s_mean": 68.0, "probe": {}, "patch_size": [24, 160, 160]}
    assert "within the probe epoch after 1 iteration(s) at 68.0 s/it" in (
        ba.describe_nnunet_training(cut)
    )
    fitted = {
        "iterations": 260,
        "probe": {"iterations": 10, "iteration_s": 0.5},
        "epochs_planned": 2,
        "iterations_per_epoch": 250,
        "epochs_run": 2,
        "stopped_by_budget": False,
    }
    text = ba.describe_nnunet_training(fitted)
    assert "probe 10 it at 0.50 s/it, then 2 epochs planned x 250 it, 2 completed;" in text
