"""Scale views: the view spacing, the Predictor's averaging (against an independent route:
the same views made by telling the plain predictor the pixels are larger), find-best's trial
on a tiny trained model (its 'without' arm is the end-of-fold validation), the deadline, and
what ``predict`` reads back."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import one_torch_thread, trained_tiny_2d

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.evaluation.scale_views import (
    MIN_GAIN,
    SCALE_VIEWS,
    decide_scale_views,
    try_scale_views,
)
from autoseg.inference.predictor import check_scales, view_spacing


def test_view_spacing_divides_the_convolved_axes_only():
    assert view_spacing((3.0, 0.5, 0.4), 1.25, 2) == (3.0, 0.4, 0.32)  # 2D config: slices kept
    assert view_spacing((2.0, 1.0, 0.5), 2.0, 3) == (1.0, 0.5, 0.25)
    assert view_spacing((4.0, 4.0), 1.0, 2) == (4.0, 4.0)
    with pytest.raises(ValueError):
        view_spacing((1.0, 1.0), 0.0, 2)


def test_check_scales_needs_the_trained_view_and_positive_scales():
    assert check_scales([1, 1.1]) == (1.0, 1.1)
    for bad in ([1.1, 1.2], [1.0, -1.0], []):
        with pytest.raises(ValueError):
            check_scales(bad)


def test_decide_keeps_the_views_only_above_the_margin():
    base = {1: 0.60, 2: 0.70}
    kept, why = decide_scale_views(base, {1: 0.61, 2: 0.70})  # mean +0.005
    assert kept and "+0.005" in why
    kept, why = decide_scale_views(base, {1: 0.60 + MIN_GAIN, 2: 0.70})  # mean +0.001
    assert not kept and "not above" in why
    assert not decide_scale_views(base, {1: 0.65, 2: 0.60})[0]  # one label up, the mean down


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A 2d model trained for two short epochs on fold 0 of a 5-frame phantom (validated)."""
    root = tmp_path_factory.mktemp("views") / "root"
    raw = trained_tiny_2d(root, 62, 5, epochs=2)
    return root, raw


def _predictor(root: Path, scales=(1.0,), tta: bool = False):
    from autoseg.inference.predictor import Predictor, load_fold_models
    from autoseg.planning.plan import load_plan

    plan = load_plan(root / "preprocessed" / "062_TinyUS")
    res = root / "results" / "062_TinyUS"
    models = {"2d": load_fold_models(res / "2d", "2d", [0], device="cpu")}
    return Predictor(plan, models, tta=tta, tta_scales=scales)


def test_views_average_what_larger_pixels_give_the_plain_predictor(trained):
    """Independent route: a view at scale s is the plain prediction of the same array with
    its spacing multiplied by s (the preprocessing then resamples it s times finer)."""
    from autoseg.preprocessing.preprocess import read_case

    root, raw = trained
    image, geom, _ = read_case([raw / "imagesTr" / "case3_0000.nii.gz"])
    with one_torch_thread():
        plain = _predictor(root)
        views = _predictor(root, SCALE_VIEWS)
        seg, probs, _ = views.predict(image, geom)
        expected = np.mean(
            [
                plain.predict(image, replace(geom, spacing=tuple(v * s for v in geom.spacing)))[1]
                for s in SCALE_VIEWS
            ],
            axis=0,
        )
        same, same_probs, _ = _predictor(root, (1.0,)).predict(image, geom)
        base = plain.predict(image, geom)[1]
    assert probs.shape == base.shape and seg.shape == image.shape[1:]
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    assert not np.allclose(probs, base, atol=1e-4)  # the views changed something
    np.testing.assert_array_equal(same_probs, base)  # (1.0,) is the plain predictor
    # with uncertainty maps: the same label map and probabilities (views averaged), the
    # disagreement taken on the trained view's mirrors
    with one_torch_thread():
        mirrored = _predictor(root, SCALE_VIEWS, tta=True)
        seg_m, probs_m, _ = mirrored.predict(image, geom)
        seg_u, probs_u, _, unc = mirrored.predict_with_uncertainty(image, geom)
    np.testing.assert_array_equal(seg_u, seg_m)
    np.testing.assert_array_equal(probs_u, probs_m)
    assert unc is not None


def test_find_best_trial_without_arm_is_the_validation_and_predict_reads_it(trained, monkeypatch):
    from autoseg.evaluation.find_best import find_best, format_find_best
    from autoseg.inference.predict import load_predictor

    root, raw = trained
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    res = root / "results" / "062_TinyUS"
    with one_torch_thread():
        info = find_best("62", root, folds=[0], num_workers=1, progress=False)
    views = info["scale_views"]
    metrics = json.loads((res / "2d" / "fold_0" / "validation" / "metrics.json").read_text())
    assert views["n_cases"] == len(metrics["cases"]) and views["scales"] == list(SCALE_VIEWS)
    # the 'without' arm predicts as the end-of-fold validation did (same mirroring rule)
    assert views["dice_without"]["1"] == pytest.approx(metrics["mean_dice"]["1"], abs=1e-6)
    gain = views["dice_with"]["1"] - views["dice_without"]["1"]
    assert views["adopted"] == (gain > MIN_GAIN)
    assert views["cases_better"] + views["cases_worse"] <= views["n_cases"]
    assert (views["cases_better"] > 0) or (views["dice_with"]["1"] <= views["dice_without"]["1"])
    assert info["tta_scales"] == (list(SCALE_VIEWS) if views["adopted"] else [1.0])
    assert "scale views 1 / 1.1 / 1.2: " in format_find_best(info)
    from autoseg.evaluation.report import build_report

    html = build_report("62", root, num_workers=0, progress=False).read_text()
    assert "<h3>Scale views</h3>" in html and views["reason"].split(" ->")[0] in html

    # predict uses what inference.json says, and --no-tta drops the views with the mirrors
    path = res / "inference.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "tta_scales": [1.0, 1.1, 1.2]}))
    assert load_predictor("62", root, device="cpu").tta_scales == (1.0, 1.1, 1.2)
    assert load_predictor("62", root, device="cpu", tta=False).tta_scales == (1.0,)
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "tta_scales"}))
    assert load_predictor("62", root, device="cpu").tta_scales == (1.0,)  # older files
    path.write_text(json.dumps({**doc, "tta_scales": [1.1, "x"]}))  # edited by hand
    with pytest.raises(AutosegError, match="tta_scales") as err:
        load_predictor("62", root, device="cpu")
    assert err.value.path == str(path) and "--no-tta" in str(err.value)
    assert load_predictor("62", root, device="cpu", tta=False).tta_scales == (1.0,)
    path.write_text(json.dumps(doc))


def test_trial_stops_at_the_deadline_and_keeps_nothing(trained):
    from autoseg.io import load_dataset_json
    from autoseg.planning.plan import load_plan

    root, raw = trained
    res = root / "results" / "062_TinyUS"
    plan = load_plan(root / "preprocessed" / "062_TinyUS")
    val = json.loads((res / "splits.json").read_text())[0]["val"]
    ending = load_dataset_json(raw).file_ending
    refs = {c: raw / "labelsTr" / f"{c}{ending}" for c in val}
    with one_torch_thread():
        trial = try_scale_views(
            raw,
            plan,
            res,
            ["2d"],
            {c: 0 for c in val},
            refs,
            [1],
            deadline=time.monotonic(),
            device="cpu",
            progress=False,
        )
    if len(val) > 1:
        assert not trial.adopted and trial.reason.startswith("stopped after 1 of")
        assert trial.tta_scales == [1.0] and trial.n_cases == 1
    else:  # one validation case: nothing to stop before
        assert trial.n_cases == 1


def test_cli_no_scale_views_skips_the_trial(trained, monkeypatch, capsys):
    root, _ = trained
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    assert main(["find-best", "62", "--folds", "0", "--no-scale-views", "--quiet"]) == 0
    doc = json.loads((root / "results" / "062_TinyUS" / "inference.json").read_text())
    assert doc["tta_scales"] == [1.0] and not doc["scale_views"]["adopted"]
    assert "not tried" in doc["scale_views"]["reason"]
    assert "not kept (not tried" in capsys.readouterr().out


def test_benchmark_rows_name_the_views_and_both_arms(trained):
    from benchmarks.scale_views import parse_views, trial_rows

    root, _ = trained
    assert parse_views("1,1.1,1.2") == (1.0, 1.1, 1.2)
    with one_torch_thread():
        rows = trial_rows(root, "062_TinyUS", [(1.0, 1.1), (0.9, 1.0)], mirror=True)
    assert [r["scales"] for r in rows] == [[1.0, 1.1], [0.9, 1.0]]
    val = json.loads((root / "results" / "062_TinyUS" / "splits.json").read_text())[0]["val"]
    assert all(r["n_cases"] == len(val) for r in rows)
    assert rows[0]["dice_without"] == rows[1]["dice_without"]  # the same trained view
