"""``autoseg robustness``: each perturbation's geometry and intensities, the unperturbed
baseline, the table and files, the CLI end to end on a tiny trained 2D phantom, the report
section, and the one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import one_torch_thread, trained_tiny_2d

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import dice
from autoseg.evaluation.robustness import (
    DEFAULT_PERTURBATIONS,
    FovCrop,
    Gamma,
    GaussianNoise,
    IntensityScale,
    LabelledCase,
    Perturbation,
    Shift,
    case_dice,
    cases_layout,
    crop_window,
    find_labelled_cases,
    format_table,
    index_to_physical,
    measure_robustness,
    select_perturbations,
    slice_axis,
    summarize_robustness,
)
from autoseg.io import Geometry, write_image


def _rotated_3d() -> tuple[np.ndarray, np.ndarray, Geometry]:
    """A 12 x 40 x 50 volume (3 x 0.5 x 0.4 mm) rotated 30° in-plane, off-origin, with a
    bright 2 x 4 x 6 box as the label: image value 100 exactly where the label is 1."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    geom = Geometry((0.4, 0.5, 3.0), (-12.0, 30.5, 7.0), direction, (50, 40, 12))
    label = np.zeros((12, 40, 50), np.uint8)
    label[5:7, 22:26, 27:33] = 1
    image = (label * 100.0)[None].astype(np.float32)
    return image, label, geom


def _sitk_origin(geom: Geometry, window) -> tuple[float, ...]:
    """SimpleITK's own answer: the origin of the region of interest starting at ``window``."""
    img = geom.apply_to(sitk.Image([int(s) for s in geom.size], sitk.sitkUInt8))
    start = [int(w.start) for w in reversed(window)]
    size = [int(w.stop - w.start) for w in reversed(window)]
    return sitk.RegionOfInterest(img, size, start).GetOrigin()


# --------------------------------------------------------------------------------------------
# Geometry


def test_slice_axis_is_the_coarsest_in_3d_and_none_in_2d():
    assert slice_axis((3.0, 0.5, 0.5)) == 0
    assert slice_axis((0.5, 0.5, 2.0)) == 2
    assert slice_axis((1.0, 1.0, 1.0)) == 0
    assert slice_axis((0.1, 0.1)) is None
    # one frame stored as a volume: the one-voxel axis, whatever the spacings say
    assert slice_axis((1.0, 1.5, 1.5), (1, 40, 50)) == 0
    w = crop_window((1, 40, 50), (1.0, 1.5, 1.5), 0.6, 0.2)
    assert (w[0].start, w[0].stop) == (0, 1) and w[1].stop == 40 and w[2].stop == 50


def test_crop_window_keeps_the_fraction_centred_and_shift_stays_inside():
    w = crop_window((48, 64), (0.1, 0.1), 0.75)
    assert [(s.start, s.stop) for s in w] == [(6, 42), (8, 56)]
    # the 60 % window moved by 20 % reaches the far border and no further
    w = crop_window((48, 64), (0.1, 0.1), 0.6, 0.2)
    assert [s.stop for s in w] == [48, 64] and [s.stop - s.start for s in w] == [29, 38]
    # 3D: slices cropped but never shifted
    w = crop_window((12, 40, 50), (3.0, 0.5, 0.4), 0.6, 0.2)
    assert (w[0].start, w[0].stop) == (2, 9)  # 7 of 12 slices, centred
    assert w[1].stop == 40 and w[2].stop == 50
    with pytest.raises(AutosegError):
        crop_window((8, 8), (1, 1), 0.0)


@pytest.mark.parametrize("perturbation", [FovCrop(0.9), FovCrop(0.6), Shift(0.1), Shift(0.2)])
def test_crops_keep_the_label_on_its_image_and_in_place(perturbation):
    image, label, geom = _rotated_3d()
    before = image.copy(), label.copy()
    out = perturbation(image, label, geom)
    # the known mask still marks exactly the bright voxels
    assert out.image.shape[1:] == out.label.shape
    assert np.array_equal(out.image[0] == 100, out.label == 1)
    assert out.label.sum() == label.sum()  # the box lies inside every window here
    # the box's first voxel is at the same physical place before and after
    idx_before = np.argwhere(label)[0]
    idx_after = np.argwhere(out.label)[0]
    assert np.allclose(
        index_to_physical(geom, idx_before), index_to_physical(out.geometry, idx_after)
    )
    # SimpleITK's region of interest agrees on the origin
    shift = perturbation.fraction if isinstance(perturbation, Shift) else 0.0
    window = crop_window(label.shape, geom.spacing_zyx, perturbation.keep, shift)
    assert np.allclose(out.geometry.origin, _sitk_origin(geom, window))
    assert out.geometry.size == tuple(reversed(out.label.shape))
    assert out.geometry.spacing == geom.spacing and out.geometry.direction == geom.direction
    # inputs untouched
    assert np.array_equal(image, before[0]) and np.array_equal(label, before[1])


def test_crop_fewer_slices_in_3d_and_shift_moves_in_plane_only():
    image, label, geom = _rotated_3d()
    out = FovCrop(0.6)(image, label, geom)
    assert out.label.shape == (7, 24, 30)
    a, b = Shift(0.1)(image, label, geom), Shift(0.2)(image, label, geom)
    za, zb = np.argwhere(a.label)[0], np.argwhere(b.label)[0]
    assert za[0] == zb[0]  # same slices
    assert za[1] > zb[1] and za[2] > zb[2]  # the window moved towards higher indices


def test_full_crop_and_zero_shift_window_change_nothing():
    image, label, geom = _rotated_3d()
    out = FovCrop(1.0)(image, label, geom)
    assert np.array_equal(out.image, image) and np.array_equal(out.label, label)
    assert out.geometry == geom


def test_intensity_perturbations_keep_label_and_geometry():
    image, label, geom = _rotated_3d()
    image = image + np.linspace(0, 50, image.size, dtype=np.float32).reshape(image.shape)
    before = image.copy()
    scaled = IntensityScale(0.7)(image, label, geom)
    assert np.allclose(scaled.image, image * 0.7)
    g = Gamma(1.5)(image, label, geom)
    assert np.isclose(g.image.min(), image.min()) and np.isclose(g.image.max(), image.max())
    mid = (image.min() + image.max()) / 2
    assert np.all(g.image[image < mid] <= image[image < mid] + 1e-3)  # > 1 darkens
    n1, n2 = GaussianNoise(0.05)(image, label, geom), GaussianNoise(0.05)(image, label, geom)
    assert np.array_equal(n1.image, n2.image)  # seeded
    lo, hi = np.percentile(image, (0.5, 99.5))
    assert abs(float(np.std(n1.image - image)) - 0.05 * (hi - lo)) < 0.005 * (hi - lo)
    for out in (scaled, g, n1):
        assert out.label is label and out.geometry == geom and out.image.dtype == np.float32
    assert np.array_equal(image, before)


def test_select_perturbations_baseline_first_and_unknown_names_refused():
    chosen = select_perturbations("crop,noise")
    assert chosen[0] == Perturbation()
    assert [p.key for p in chosen[1:]] == [
        p.key for p in (*DEFAULT_PERTURBATIONS["crop"], *DEFAULT_PERTURBATIONS["noise"])
    ]
    assert len(select_perturbations(None)) == 1 + sum(map(len, DEFAULT_PERTURBATIONS.values()))
    with pytest.raises(AutosegError, match="unknown perturbation 'zoom'"):
        select_perturbations("crop,zoom")


# --------------------------------------------------------------------------------------------
# Measuring with a predictor whose answer is known


class ThresholdPredictor:
    """Foreground where the image exceeds 50: Dice 1 on the box phantom until the intensity
    change moves the box below the threshold."""

    def predict(self, image, geometry):
        seg = (image[0] > 50).astype(np.uint8)
        return seg, None, None


def test_baseline_is_the_plain_prediction_and_changes_are_measured():
    image, label, geom = _rotated_3d()
    label = label.copy()
    label[5, 22, 27:29] = 0  # two reference voxels the threshold over-segments
    chosen = [Perturbation(), FovCrop(1.0), FovCrop(0.6), IntensityScale(0.4)]
    out = case_dice(ThresholdPredictor(), image, label, geom, chosen, [1])
    plain = dice(ThresholdPredictor().predict(image, geom)[0], label, 1)
    assert plain < 1.0
    assert out["none@0"]["dice"]["1"] == plain  # exactly, not approximately
    assert out["crop@1"]["dice"]["1"] == plain
    assert out["crop@0.6"]["dice"]["1"] == plain  # the crop keeps the whole box aligned
    assert out["scale@0.4"]["dice"]["1"] == 0.0  # 100 x 0.4 falls below the threshold
    assert out["crop@0.6"]["ref_voxels"]["1"] == int(label.sum())

    rows = summarize_robustness({"a": out, "b": out}, chosen, {1: "nerve"})
    scale = next(r for r in rows if r["key"] == "scale@0.4")
    assert scale["delta_dice"] == pytest.approx(-plain)
    assert scale["n_below"] == 2 and scale["n_dropped_below"] == 2
    text = format_table(rows)
    assert "scale" in text and f"{-plain:+.3f}" in text and "2/2 (2)" in text


def _write_cases(folder: Path, n: int, images: str, labels: str) -> None:
    image, label, _ = _rotated_3d()
    geom = Geometry.default(label.shape, (3.0, 0.5, 0.4))
    for i in range(n):
        write_image(folder / images / f"c{i}_0000.nii.gz", image[0], geom)
        write_image(folder / labels / f"c{i}.nii.gz", label, geom)


def test_layouts_accepted_and_refused(tmp_path):
    _write_cases(tmp_path / "ts", 2, "imagesTs", "labelsTs")
    _write_cases(tmp_path / "tr", 2, "imagesTr", "labelsTr")
    assert cases_layout(tmp_path / "ts")[1].name == "labelsTs"
    assert cases_layout(tmp_path / "tr")[0].name == "imagesTr"
    assert cases_layout(tmp_path / "ts" / "imagesTs")[1] == tmp_path / "ts" / "labelsTs"
    cases = find_labelled_cases(tmp_path / "ts", 1)
    assert [c.case_id for c in cases] == ["c0", "c1"]
    assert cases[0].images[0].name == "c0_0000.nii.gz"
    with pytest.raises(AutosegError, match="no imagesTs \\+ labelsTs"):
        cases_layout(tmp_path)
    with pytest.raises(AutosegError, match="not found"):
        cases_layout(tmp_path / "nowhere")
    with pytest.raises(AutosegError, match="no image c0_0001"):
        find_labelled_cases(tmp_path / "ts", 2)


def test_measure_reads_cases_and_names_them(tmp_path):
    _write_cases(tmp_path, 2, "imagesTs", "labelsTs")
    cases = find_labelled_cases(tmp_path, 1)
    per_case = measure_robustness(
        ThresholdPredictor(), cases, [Perturbation(), Shift(0.2)], {1: "nerve"}, progress=False
    )
    assert set(per_case) == {"c0", "c1"}
    assert per_case["c0"]["shift@0.2"]["dice"]["1"] == 1.0
    assert isinstance(cases[0], LabelledCase)


# --------------------------------------------------------------------------------------------
# End to end on a trained tiny model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A 2d model trained for one short epoch on fold 0 of a 5-frame phantom: (root, raw)."""
    root = tmp_path_factory.mktemp("robust") / "root"
    raw = trained_tiny_2d(root, 61, 5, epochs=1)
    return root, raw


MODEL_ARGS = ["--config", "2d", "--folds", "0", "--no-tta", "--device", "cpu", "--no-progress"]


def test_cli_end_to_end_writes_table_files_and_report_section(trained, monkeypatch, capsys):
    from autoseg.evaluation.report import build_report
    from autoseg.inference.predict import load_predictor
    from autoseg.preprocessing.preprocess import read_case

    root, raw = trained
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    res = root / "results" / "061_TinyUS"
    report = build_report("61", root, num_workers=0, progress=False).read_text()
    assert 'id="robustness"' in report and "autoseg robustness -d 61 --cases" in report

    tests_dir = root / "tests"
    shutil.copytree(raw / "imagesTr", tests_dir / "imagesTs")
    shutil.copytree(raw / "labelsTr", tests_dir / "labelsTs")
    argv = ["robustness", "-d", "61", "--cases", str(tests_dir), "--max-cases", "2"]
    with one_torch_thread():
        code = main([*argv, "--perturbations", "crop,scale", *MODEL_ARGS])
    assert code == 0
    out = capsys.readouterr().out
    assert "perturbation" in out and "crop" in out and "scale" in out and "nerve" in out
    assert "2 case(s) from imagesTs + labelsTs" in out
    data = json.loads((res / "robustness.json").read_text())
    assert data["n_cases"] == 2 and data["n_cases_found"] == 5
    assert list(data["cases"]) == ["case0", "case1"]
    keys = [p["key"] for p in data["perturbations"]]
    assert keys == ["none@0", "crop@0.9", "crop@0.75", "crop@0.6", "scale@0.7", "scale@1.3"]
    assert (res / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert (res / "robustness.txt").read_text().startswith("perturbation")

    # the unperturbed row is exactly the model's plain prediction scored with dice
    with one_torch_thread():
        predictor = load_predictor(
            "61", root, configs=["2d"], folds=[0], device="cpu", tta=False, postprocess=True
        )
        for case in ("case0", "case1"):
            image, geom, label = read_case(
                [raw / "imagesTr" / f"{case}_0000.nii.gz"], raw / "labelsTr" / f"{case}.nii.gz"
            )
            seg, _, _ = predictor.predict(image, geom)
            assert data["cases"][case]["none@0"]["dice"]["1"] == dice(seg, label, 1)

    report = build_report("61", root, num_workers=0, progress=False).read_text()
    assert 'id="robustness-table"' in report and "crop" in report
    assert "No robustness.json yet" not in report


def test_cli_one_line_errors(trained, monkeypatch, capsys, tmp_path):
    root, raw = trained
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    cases = [
        (["--cases", str(raw), "--perturbations", "zoom"], "unknown perturbation 'zoom'"),
        (["--cases", str(tmp_path)], "no imagesTs + labelsTs or imagesTr + labelsTr"),
        (["--cases", str(tmp_path / "none")], "cases folder not found"),
        (["--cases", str(raw), "--max-cases", "0"], "--max-cases 0 must be 1 or more"),
        (["--cases", str(raw), "--folds", "a"], "is not a list of fold numbers"),
        (["--cases", str(raw)], "no inference.json"),  # no --config and find-best not run
    ]
    for extra, expected in cases:
        code = main(["robustness", "-d", "61", *extra, "--no-progress", "-o", str(tmp_path)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert len(err.splitlines()) == 1 and expected in err, err
        assert err.startswith("autoseg robustness: error: ")
    assert not (tmp_path / "robustness.json").exists()
