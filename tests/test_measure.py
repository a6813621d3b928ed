"""Tests for autoseg.evaluation.measure and ``autoseg measure`` on synthetic nerves of known size.

Cylinders are voxelised from their exact geometry (voxel centre within r of the axis), so
the true CSA is pi r² perpendicular to the axis and pi r² / cos(tilt) in a slice.
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

from autoseg.cli import measure as measure_cli
from autoseg.errors import AutosegError
from autoseg.evaluation import measure_files, measure_nerve
from autoseg.io import Geometry, write_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def cylinder(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    radius: float,
    direction_zyx: tuple[float, float, float] = (1.0, 0.0, 0.0),
) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` mm of a line through the volume centre."""
    d = np.asarray(direction_zyx, float)
    d /= np.linalg.norm(d)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    p = np.stack([z, y, x], axis=-1)
    along = p @ d
    perp = p - along[..., None] * d
    return (np.linalg.norm(perp, axis=-1) <= radius).astype(np.uint8)


def test_straight_cylinder_at_anisotropic_spacing():
    spacing, r = (3.5, 0.5, 0.4), 3.0
    seg = cylinder((16, 30, 36), spacing, r)
    m = measure_nerve(seg, spacing)
    s = m.summary()
    area = math.pi * r * r
    assert m.n_branches == 1 and s["n_slices"] == 16
    for sl in m.slices:
        assert sl.csa_mm2 == pytest.approx(area, rel=0.03)
        assert sl.csa_perpendicular_mm2 == pytest.approx(sl.csa_mm2)
        assert sl.min_diameter_mm == pytest.approx(2 * r, rel=0.04)
        assert sl.max_diameter_mm == pytest.approx(2 * r, rel=0.04)
        assert sl.tilt_deg == pytest.approx(0.0, abs=1e-6)
    assert m.volume_mm3 == pytest.approx(area * 16 * 3.5, rel=0.03)
    assert m.length_mm == pytest.approx(16 * 3.5)


@pytest.mark.parametrize(
    ("direction", "tilt"),
    [
        ((math.cos(math.radians(30)), 0.0, math.sin(math.radians(30))), 30.0),
        ((1.0, 0.4, -0.5), math.degrees(math.acos(1 / math.sqrt(1 + 0.16 + 0.25)))),
    ],
)
def test_oblique_cylinder_perpendicular_csa_is_pi_r_squared(direction, tilt):
    spacing, r = (3.0, 0.6, 0.45), 3.5
    shape = (14, 70, 90)
    seg = cylinder(shape, spacing, r, direction)
    assert not seg[:, [0, -1], :].any() and not seg[:, :, [0, -1]].any()  # stays inside
    m = measure_nerve(seg, spacing)
    assert m.n_branches == 1
    cos_t = math.cos(math.radians(tilt))
    area = math.pi * r * r
    perp = np.array([s.csa_perpendicular_mm2 for s in m.slices])
    plane = np.array([s.csa_mm2 for s in m.slices])
    assert np.all(np.abs(perp / area - 1) < 0.04), perp / area
    assert np.median(plane) == pytest.approx(area / cos_t, rel=0.03)
    assert np.median([s.tilt_deg for s in m.slices]) == pytest.approx(tilt, abs=1.0)
    dmin = np.median([s.min_diameter_perpendicular_mm for s in m.slices])
    dmax = np.median([s.max_diameter_perpendicular_mm for s in m.slices])
    assert dmin == pytest.approx(2 * r, rel=0.04) and dmax == pytest.approx(2 * r, rel=0.04)
    # In the slice plane the section is stretched to 2r/cos(tilt) along the tilt.
    assert np.median([s.max_diameter_mm for s in m.slices]) == pytest.approx(
        2 * r / cos_t, rel=0.04
    )
    slab = shape[0] * spacing[0]
    assert m.length_mm == pytest.approx(slab / cos_t, rel=0.02)
    assert m.volume_mm3 == pytest.approx(area * slab / cos_t, rel=0.03)


def test_steep_thin_nerve_without_slice_overlap_is_still_one_branch():
    spacing, r = (4.0, 0.5, 0.5), 1.2
    direction = (math.cos(math.radians(55)), 0.0, math.sin(math.radians(55)))
    seg = cylinder((10, 16, 150), spacing, r, direction)
    lab_overlap = [
        (seg[k] & seg[k + 1]).any() for k in range(9) if seg[k].any() and seg[k + 1].any()
    ]
    assert not any(lab_overlap)  # consecutive sections do not overlap
    m = measure_nerve(seg, spacing, axis=0)
    assert m.n_branches == 1
    assert np.median([s.tilt_deg for s in m.slices]) == pytest.approx(55, abs=2)
    assert measure_nerve(seg, spacing).slice_axis == 2  # auto: the nerve's longest extent


def y_split(shape=(20, 40, 60), spacing=(3.0, 0.5, 0.5), r=2.0, split=10) -> np.ndarray:
    """Trunk down to slice ``split``-1, then two branches diverging by 1 mm per slice."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    cy, cx = shape[1] * spacing[1] / 2, shape[2] * spacing[2] / 2
    seg = np.zeros(shape, np.uint8)
    k = np.arange(shape[0])[:, None, None]
    trunk = (k < split) & ((y - cy) ** 2 + (x - cx) ** 2 <= (1.6 * r) ** 2)
    offset = r + 0.6 + 1.0 * np.maximum(k - split, 0)
    left = (k >= split) & ((y - cy) ** 2 + (x - cx + offset) ** 2 <= r * r)
    right = (k >= split) & ((y - cy) ** 2 + (x - cx - offset) ** 2 <= r * r)
    seg[trunk | left | right] = 1
    return seg


def test_y_shaped_split_gives_two_branches_below_the_split():
    seg = y_split()
    m = measure_nerve(seg, (3.0, 0.5, 0.5))
    above = {s.branch for s in m.slices if s.slice < 10}
    below = {s.branch for s in m.slices if s.slice >= 10}
    assert len(above) == 1 and len(below) == 2 and not above & below
    assert m.n_branches == 3
    for k in range(10, 20):
        assert sum(s.slice == k for s in m.slices) == 2
    # Branch length: trunk (10 slices of 3 mm) + two branches of 10 slices each.
    assert m.summary()["n_slices"] == 20
    assert m.length_mm > 3 * 10 * 3.0 * 0.95


def test_2d_ellipse_area_and_diameters():
    spacing = (0.08, 0.1)  # ultrasound-like, anisotropic pixels
    a, b = 3.0, 1.5  # semi-axes in mm, rotated by 30 degrees
    yy, xx = np.meshgrid(np.arange(150) * spacing[0], np.arange(120) * spacing[1], indexing="ij")
    yy, xx = yy - 6.0, xx - 6.0
    t = math.radians(30)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    seg = ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8) * 2
    m = measure_nerve(seg, spacing, label=2)
    assert len(m.slices) == 1 and m.ndim == 2
    s = m.slices[0]
    assert s.csa_mm2 == pytest.approx(math.pi * a * b, rel=0.02)
    assert s.csa_perpendicular_mm2 == s.csa_mm2
    assert s.max_diameter_mm == pytest.approx(2 * a, rel=0.02)
    assert s.min_diameter_mm == pytest.approx(2 * b, rel=0.02)
    assert math.isnan(m.volume_mm3) and math.isnan(m.length_mm)


# A small nerve cross-section (18 px) that cc3d 4.1.1 labels wrongly when handed the bool
# mask with 8-connectivity (autoseg.io.components): background pixel (2, 0) gets label 1, so
# the section measured 19 px. Found by a seeded search over smoothed-noise masks.
CC3D_BOOL_TRAP = """
.......
..####.
..####.
..####.
...###.
....##.
.....#.
.......
"""


def _picture(text: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in text.split()])


def test_cross_section_that_raw_cc3d_mislabels_is_measured_right():
    mask = _picture(CC3D_BOOL_TRAP)
    raw, n = cc3d.connected_components(mask, connectivity=8, return_N=True)
    if n == 1 and np.array_equal(raw > 0, mask):
        pytest.skip(
            "the installed cc3d labels this bool mask correctly (fixed upstream?), so this "
            "case no longer exercises the bug; find a new one with a random search"
        )
    spacing = (0.5, 0.4)
    # Expected values straight from the pixels: area, centroid and the moment ellipse
    # (diameters 4 sqrt(eigenvalue), pixel-size corrected; see the measure module docstring).
    ys, xs = np.nonzero(mask)
    y, x = ys * spacing[0], xs * spacing[1]
    cov = np.cov(np.stack([y, x]), bias=True) + np.diag(np.square(spacing) / 12.0)
    diameters = 4.0 * np.sqrt(np.linalg.eigvalsh(cov))
    m2 = measure_nerve(mask.astype(np.uint8), spacing)
    stack = np.stack([mask] * 3).astype(np.uint8)  # the same section in three slices
    m3 = measure_nerve(stack, (3.0, *spacing), axis=0)
    assert len(m2.slices) == 1 and len(m3.slices) == 3
    for s in m2.slices + m3.slices:
        assert s.area_px == 18
        assert s.csa_mm2 == pytest.approx(18 * spacing[0] * spacing[1])
        assert (s.centroid_y_mm, s.centroid_x_mm) == pytest.approx((y.mean(), x.mean()))
        assert (s.min_diameter_mm, s.max_diameter_mm) == pytest.approx(tuple(diameters))


def test_mean_intensity_per_slice_and_overall():
    spacing = (3.0, 0.5, 0.5)
    seg = cylinder((6, 20, 20), spacing, 2.0)
    image = np.zeros(seg.shape, np.float32) + 1000.0  # background must not leak in
    for k in range(6):
        image[k][seg[k] > 0] = 10.0 * k
    m = measure_nerve(seg, spacing, image=image)
    for s in m.slices:
        assert s.mean_intensity == pytest.approx(10.0 * s.slice)
    assert m.mean_intensity == pytest.approx(25.0)
    assert math.isnan(measure_nerve(seg, spacing).slices[0].mean_intensity)


def test_empty_mask_gives_an_empty_result():
    m = measure_nerve(np.zeros((4, 10, 10), np.uint8), (3.0, 0.5, 0.5))
    assert m.empty and m.slices == [] and m.n_branches == 0
    s = m.summary()
    assert s["n_slices"] == 0 and s["volume_mm3"] == 0.0 and s["length_mm"] == 0.0
    assert math.isnan(s["csa_perpendicular_mean_mm2"])
    assert "not present" in m.notes[0]


def test_slicing_axis_can_be_chosen():
    spacing = (0.5, 3.0, 0.5)  # slices along y
    seg = np.moveaxis(cylinder((12, 30, 30), (3.0, 0.5, 0.5), 3.0), 0, 1)
    m = measure_nerve(seg, spacing, axis=1)
    assert m.n_branches == 1 and len(m.slices) == 12
    assert measure_nerve(seg, spacing).slice_axis == 1
    assert np.median([s.csa_mm2 for s in m.slices]) == pytest.approx(math.pi * 9, rel=0.03)


# --------------------------------------------------------------------------------------------
# Files and CLI


def _write(folder: Path, name: str, arr: np.ndarray, spacing=(3.0, 0.5, 0.5)) -> Path:
    path = folder / name
    write_image(path, arr, Geometry.default(arr.shape, spacing))
    return path


def test_measure_files_with_images_writes_tables_and_plots(tmp_path):
    spacing = (3.0, 0.5, 0.5)
    seg = cylinder((8, 24, 24), spacing, 2.5)
    _write(tmp_path / "seg", "case_a.nii.gz", seg)
    _write(tmp_path / "seg", "case_b.nii.gz", np.zeros_like(seg))
    img = (seg * 50 + 7).astype(np.float32)
    _write(tmp_path / "img", "case_a_0000.nii.gz", img)
    _write(tmp_path / "img", "case_b_0000.nii.gz", img)
    out = tmp_path / "out"
    results = dict(
        measure_files(
            tmp_path / "seg", tmp_path / "img", out_dir=out, num_workers=1, progress=False
        )
    )
    assert results["case_b"].empty and not results["case_a"].empty
    for name in ("case_a_slices.csv", "case_a_csa.png", "case_b_csa.png", "measurements.csv"):
        assert (out / name).is_file(), name
    assert (out / "case_a_csa.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "case_a_slices.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and float(rows[0]["mean_intensity"]) == pytest.approx(57.0)
    assert "csa_perpendicular_mm2" in rows[0] and "min_diameter_mm" in rows[0]
    with open(out / "case_b_slices.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 0
    with open(out / "measurements.csv") as fh:
        table = {r["case"]: r for r in csv.DictReader(fh)}
    assert float(table["case_a"]["volume_mm3"]) == pytest.approx(results["case_a"].volume_mm3)
    assert table["case_b"]["empty"] == "1"
    data = json.loads((out / "measurements.json").read_text())
    assert len(data["cases"]) == 2


def test_missing_image_is_a_user_error(tmp_path):
    seg = cylinder((4, 12, 12), (3.0, 0.5, 0.5), 2.0)
    _write(tmp_path / "seg", "c.nii.gz", seg)
    (tmp_path / "img").mkdir()
    _write(tmp_path / "img", "other.nii.gz", seg)
    with pytest.raises(AutosegError, match="no image for case"):
        measure_files(tmp_path / "seg", tmp_path / "img", progress=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoseg")
    sub = parser.add_subparsers(dest="command")
    measure_cli.register(sub)
    return parser


def test_cli_on_a_2d_png_with_spacing(tmp_path, capsys):
    seg = np.zeros((60, 80), np.uint8)
    yy, xx = np.mgrid[:60, :80]
    seg[((yy - 30) / 10) ** 2 + ((xx - 40) / 20) ** 2 <= 1] = 1
    path = _write(tmp_path, "us.png", seg, spacing=None)
    args = _parser().parse_args(["measure", str(path), "--spacing", "0.1,0.1", "--quiet"])
    assert args.func(args) == 0
    assert "1 slice(s)" in capsys.readouterr().out
    with open(tmp_path / "measurements" / "us_slices.csv") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["csa_mm2"]) == pytest.approx(math.pi * 1.0 * 2.0, rel=0.03)
    assert float(row["max_diameter_mm"]) == pytest.approx(4.0, rel=0.03)


def test_cli_png_without_spacing_notes_pixels(tmp_path, capsys):
    seg = np.zeros((20, 20), np.uint8)
    seg[5:10, 5:10] = 1
    path = _write(tmp_path, "us.png", seg, spacing=None)
    args = _parser().parse_args(["measure", str(path), "--quiet", "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert "pixels" in capsys.readouterr().out


def test_cli_bad_spacing(tmp_path):
    path = _write(tmp_path, "c.nii.gz", np.zeros((2, 4, 4), np.uint8))
    args = _parser().parse_args(["measure", str(path), "--spacing", "a,b"])
    with pytest.raises(AutosegError, match="spacing"):
        args.func(args)


@pytest.mark.skipif(not (DATA / "sct_testing" / "t2").is_dir(), reason="no shared data")
def test_real_spinal_cord_segmentation_runs():
    from autoseg.io import read_image

    data = read_image(DATA / "sct_testing" / "t2" / "t2_seg-manual.nii.gz")
    m = measure_nerve(data.array > 0, data.geometry.spacing_zyx, label=1)
    s = m.summary()
    assert m.slice_axis == 1  # the cord runs along the second array axis in this file
    # The adult spinal cord is 60-90 mm² in cross-section at 1 mm isotropic voxels.
    assert 20 < s["csa_perpendicular_median_mm2"] < 150
    assert s["n_branches"] >= 1
