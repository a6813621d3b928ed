"""Synthetic nerve phantoms: determinism, prefix property, geometry, anatomy, files, CLI."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.io import read_image
from autoseg.io.components import label_components
from autoseg.phantoms import (
    COHORTS,
    Mri3dConfig,
    Us2dConfig,
    generate_phantom,
    make_case,
    make_mri3d_case,
    make_us2d_case,
)
from autoseg.phantoms.common import (
    KIND_MRI3D,
    PURPOSE_COHORT,
    evenly_spread_flag,
    make_rng,
    smooth_field,
    subject_of_case,
)

# Small grids keep every test fast; spacing is coarser so the anatomy (in mm) still fits.
SMALL_MRI = Mri3dConfig(shape=(8, 64, 64), spacing=(4.0, 1.5, 1.5))
SMALL_US = Us2dConfig(shape=(96, 120))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "cases.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- determinism ------------------------------------------------------------------------


@pytest.mark.parametrize("kind, cfg", [("mri3d", SMALL_MRI), ("us2d", SMALL_US)])
def test_same_seed_same_arrays_other_seed_different(kind, cfg):
    a = make_case(kind, 2, seed=5, config=cfg)
    b = make_case(kind, 2, seed=5, config=cfg)
    c = make_case(kind, 2, seed=6, config=cfg)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.origin == b.origin
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, make_case(kind, 3, seed=5, config=cfg).image)


@pytest.mark.parametrize("kind, cfg", [("mri3d", SMALL_MRI), ("us2d", SMALL_US)])
def test_files_byte_identical_and_prefix(tmp_path, kind, cfg):
    run = dict(seed=3, progress=False, config=cfg)
    generate_phantom(kind, tmp_path / "a", n_cases=3, **run)
    generate_phantom(kind, tmp_path / "b", n_cases=3, **run)
    generate_phantom(kind, tmp_path / "c", n_cases=4, **run)
    generate_phantom(kind, tmp_path / "d", n_cases=3, **{**run, "seed": 4})
    a, b, c, d = (_files(tmp_path / x) for x in "abcd")
    assert a == b
    # Prefix: the 4-case phantom holds the 3-case one byte for byte (cases.csv has a row more).
    images = {k: v for k, v in a.items() if k != "cases.csv"}
    assert len(images) == 6
    assert all(c[k] == v for k, v in images.items())
    assert len(c) == len(a) + 2
    assert c["cases.csv"].startswith(a["cases.csv"])
    # Another seed: same names, different content.
    assert d.keys() == a.keys()
    assert all(d[k] != v for k, v in images.items())


def test_case_depends_only_on_seed_and_index():
    direct = make_mri3d_case(4, 1, SMALL_MRI)
    in_sequence = [make_mri3d_case(i, 1, SMALL_MRI) for i in range(5)][4]
    np.testing.assert_array_equal(direct.image, in_sequence.image)
    assert (direct.subject, direct.cohort) == (in_sequence.subject, in_sequence.cohort)


# --- heuristics -------------------------------------------------------------------------


def test_evenly_spread_flag_keeps_every_prefix_near_the_fraction():
    for seed in range(5):
        flags = [evenly_spread_flag(seed, KIND_MRI3D, PURPOSE_COHORT, i, 0.4) for i in range(60)]
        counts = np.cumsum(flags)
        n = np.arange(1, 61)
        assert np.all(np.abs(counts - 0.4 * n) <= 2.5), seed
        assert counts[2] >= 1  # the first 3 subjects include a patient
    a = [evenly_spread_flag(0, KIND_MRI3D, PURPOSE_COHORT, i, 0.4) for i in range(20)]
    b = [evenly_spread_flag(1, KIND_MRI3D, PURPOSE_COHORT, i, 0.4) for i in range(20)]
    assert a != b  # the offset depends on the seed


def test_subject_layout_is_consecutive_and_prefix_stable():
    counts = {0: 2, 1: 1, 2: 3, 3: 2}
    layout = [subject_of_case(i, lambda s: counts.get(s, 1)) for i in range(9)]
    assert layout == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (4, 0)]


def test_smooth_field_is_standardised_and_correlated():
    f = smooth_field(make_rng(0, 1, 1, 0), (6, 80, 90), (2.0, 10.0, 10.0))
    assert f.shape == (6, 80, 90) and f.dtype == np.float32
    assert abs(float(f.mean())) < 1e-4 and abs(float(f.std()) - 1) < 1e-3
    # Gaussian-filtered noise (sigma 10) has autocorrelation exp(-lag^2 / 400): 0.78 at lag 10,
    # 0.02 at lag 40. Averaged over seeds on a grid wide enough to estimate it.
    lag = {10: [], 40: []}
    for seed in range(3):
        g = smooth_field(make_rng(seed, 1, 1, 0), (4, 200, 200), (2.0, 10.0, 10.0))
        for k, values in lag.items():
            values.append(float(np.mean(g[:, :, :-k] * g[:, :, k:])))
    assert 0.6 < np.mean(lag[10]) < 0.9
    assert abs(np.mean(lag[40])) < 0.2


# --- 3D anatomy ---------------------------------------------------------------------------


def test_mri3d_geometry_round_trips(tmp_path):
    cases = generate_phantom("mri3d", tmp_path, n_cases=2, seed=0, progress=False, config=SMALL_MRI)
    for case in cases:
        img = read_image(tmp_path / f"{case.case_id}.nii.gz")
        lab = read_image(tmp_path / f"{case.case_id}_mask.nii.gz")
        assert img.array.dtype == np.int16 and lab.array.dtype == np.uint8
        np.testing.assert_array_equal(img.array, case.image)
        np.testing.assert_array_equal(lab.array, case.mask)
        assert img.geometry.spacing_zyx == pytest.approx(SMALL_MRI.spacing)
        assert img.geometry.origin == pytest.approx(case.origin, abs=1e-6)
        assert all(abs(o) > 1 for o in img.geometry.origin)  # non-zero origin
        assert img.geometry.mismatch(lab.geometry) is None
    assert cases[0].origin != cases[1].origin


def test_mri3d_default_cases_labels_fraction_subjects():
    cases = [make_mri3d_case(i, 0) for i in range(6)]
    for c in cases:
        assert c.image.shape == (24, 160, 160) and c.image.dtype == np.int16
        assert set(np.unique(c.mask).tolist()) == {0, 1}
        assert 0.0008 < c.mask.mean() < 0.02, c.case_id
        assert np.all(c.mask.any(axis=(1, 2)))  # the nerve runs through every slice
        assert c.image.min() >= 0 and c.image.max() > 500
    assert 0.001 < np.mean([c.mask.mean() for c in cases]) < 0.01
    subjects = [c.subject for c in cases]
    assert len(set(subjects)) < len(subjects)  # some subject was scanned twice
    assert {c.cohort for c in cases} == set(COHORTS)


def _components_per_slice(mask: np.ndarray) -> list[int]:
    return [label_components(s, 8)[1] for s in mask]


def test_mri3d_branching_in_some_cases_only():
    cases = [make_mri3d_case(i, 2, SMALL_MRI) for i in range(10)]
    branched = [c for c in cases if c.has_branch]
    assert 1 <= len(branched) <= 5
    for c in cases:
        counts = _components_per_slice(c.mask)
        if c.has_branch:
            assert counts[0] == 2  # the distal end is split into tibial and peroneal parts
            assert counts[-1] == 1  # one trunk proximally
            assert max(counts) == 2
        else:
            assert counts == [1] * len(counts), c.case_id


def _nerve_to_muscle_ratio(c) -> float:
    inner = ndimage.binary_erosion(c.mask, np.ones((1, 3, 3), bool))
    body = (c.image > 0.2 * np.percentile(c.image, 99)) & ~ndimage.binary_dilation(c.mask)
    return float(np.median(c.image[inner]) / np.median(c.image[body]))


def test_mri3d_patients_have_larger_brighter_nerves():
    cases = [make_mri3d_case(i, 1, SMALL_MRI) for i in range(12)]
    by = {k: [c for c in cases if c.cohort == k] for k in COHORTS}
    assert by["patient"] and by["volunteer"]
    area = {k: np.mean([c.mask.sum(axis=(1, 2)).mean() for c in v]) for k, v in by.items()}
    assert area["patient"] > 1.5 * area["volunteer"]
    ratio = {k: np.mean([_nerve_to_muscle_ratio(c) for c in v]) for k, v in by.items()}
    assert ratio["patient"] > 1.15 * ratio["volunteer"]


def test_mri3d_vessels_look_like_nerve_but_are_unlabelled():
    to_body = []
    for i in range(6):
        c = make_mri3d_case(i, 0, SMALL_MRI)
        assert c.n_vessels >= 1 and c.vessel_mask is not None
        vessel = c.vessel_mask
        assert vessel.sum() > 50
        # Never labelled: the mask holds only the nerve (one component per slice, two below a
        # split) although vessels are visible beside it in the same slices.
        assert max(_components_per_slice(c.mask)) <= 1 + c.has_branch
        assert max(_components_per_slice(vessel.astype(np.uint8))) >= 1
        ratio = np.median(c.image[vessel]) / np.median(c.image[c.mask > 0])
        assert 0.5 < ratio < 2.5, (c.case_id, ratio)  # a plausible false positive
        body = (c.image > 0.2 * np.percentile(c.image, 99)) & ~vessel & (c.mask == 0)
        to_body.append(np.median(c.image[vessel]) / np.median(c.image[body]))
    assert np.mean(to_body) > 1.3  # brighter than the muscle around them


def test_mri3d_second_scan_is_mirrored_other_thigh():
    cfg = dataclasses.replace(SMALL_MRI, second_scan_fraction=1.0)
    first, second = make_mri3d_case(0, 0, cfg), make_mri3d_case(1, 0, cfg)
    assert first.subject == second.subject and first.cohort == second.cohort
    centre = (SMALL_MRI.shape[2] - 1) / 2
    x1 = np.nonzero(first.mask)[2].mean() - centre
    x2 = np.nonzero(second.mask)[2].mean() - centre
    assert abs(x1) < 3 or np.sign(x1) != np.sign(x2)


# --- 2D anatomy ---------------------------------------------------------------------------


def test_us2d_frames_labels_bands_subjects(tmp_path):
    cases = generate_phantom("us2d", tmp_path, n_cases=8, seed=0, progress=False, config=SMALL_US)
    for c in cases:
        img = read_image(tmp_path / "images" / f"{c.case_id}.png").array
        lab = read_image(tmp_path / "masks" / f"{c.case_id}.png").array
        assert img.shape == SMALL_US.shape and img.dtype == np.uint8
        np.testing.assert_array_equal(img, c.image)
        np.testing.assert_array_equal(lab, c.mask)
        assert set(np.unique(lab).tolist()) == {0, 1}
        assert label_components(lab, 8)[1] == 1
        assert not img[:, 0].any() and not img[:, -1].any()  # black bands at the sides
        assert 10 < np.median(img[:, 10:-10]) < 140
    per_subject = np.unique([c.subject for c in cases], return_counts=True)[1]
    assert per_subject[0] >= 3  # several frames per subject


def test_us2d_patients_larger_vessels_dark_and_unlabelled():
    cases = [make_us2d_case(i, 0) for i in range(12)]
    by = {k: [c.nerve_area_mm2 for c in cases if c.cohort == k] for k in COHORTS}
    assert by["patient"] and by["volunteer"]
    assert np.mean(by["patient"]) > 1.3 * np.mean(by["volunteer"])
    for c in cases:
        assert 0.003 < c.mask.mean() < 0.05
        assert c.vessel_mask is not None and c.vessel_mask.sum() > 30
        assert label_components(c.mask, 8)[1] == 1  # vessels unlabelled
        lumen = ndimage.binary_erosion(c.vessel_mask, iterations=2)
        tissue = c.image[c.image > 0]
        assert np.median(c.image[lumen]) < 0.5 * np.median(tissue)  # anechoic


def test_us2d_shape_is_a_parameter():
    c = make_us2d_case(0, 0, Us2dConfig(shape=(120, 150)))
    assert c.image.shape == (120, 150) and c.mask.any()
    assert c.spacing[0] == pytest.approx(25.0 / 120)


# --- files, errors, CLI ---------------------------------------------------------------------


def test_cases_csv_matches_files(tmp_path):
    cases = generate_phantom("mri3d", tmp_path, n_cases=5, seed=0, progress=False, config=SMALL_MRI)
    rows = _rows(tmp_path)
    assert list(rows[0].keys()) == ["case", "subject", "cohort"]
    assert [r["case"] for r in rows] == [f"thigh_{i:03d}" for i in range(5)]
    assert [(r["subject"], r["cohort"]) for r in rows] == [(c.subject, c.cohort) for c in cases]
    assert all(r["cohort"] in COHORTS and r["subject"].startswith("sub_") for r in rows)
    for r in rows:
        assert (tmp_path / f"{r['case']}.nii.gz").is_file()
        assert (tmp_path / f"{r['case']}_mask.nii.gz").is_file()
    assert not list(tmp_path.glob(".partial-*"))


def test_refuses_bad_input(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AutosegError, match="not empty"):
        generate_phantom("mri3d", tmp_path, n_cases=1, progress=False, config=SMALL_MRI)
    with pytest.raises(AutosegError, match="is a file"):
        generate_phantom("us2d", tmp_path / "file.txt", n_cases=1, progress=False)
    with pytest.raises(AutosegError, match="unknown phantom kind"):
        generate_phantom("ct", tmp_path / "new", n_cases=1, progress=False)
    with pytest.raises(AutosegError, match="seed"):
        generate_phantom("us2d", tmp_path / "new", n_cases=1, seed=-1, progress=False)
    with pytest.raises(AutosegError, match="positive integer"):
        generate_phantom("us2d", tmp_path / "new", n_cases=0, progress=False)
    with pytest.raises(AutosegError, match="too small"):
        Mri3dConfig(shape=(2, 64, 64))


def test_overwrite_replaces_earlier_phantom_and_keeps_other_files(tmp_path):
    generate_phantom("us2d", tmp_path, n_cases=4, seed=0, progress=False, config=SMALL_US)
    (tmp_path / "notes.txt").write_text("mine")
    generate_phantom(
        "mri3d", tmp_path, n_cases=2, seed=0, overwrite=True, progress=False, config=SMALL_MRI
    )
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == sorted(
        ["cases.csv", "notes.txt"]
        + [f"thigh_00{i}{s}.nii.gz" for i in range(2) for s in ("", "_mask")]
    )
    assert not (tmp_path / "images").exists()
    assert len(_rows(tmp_path)) == 2


def test_cli_refuses_non_empty_then_overwrites(tmp_path, capsys):
    out = tmp_path / "ph"
    argv = ["phantom", "--kind", "mri3d", "--cases", "2", "--shape", "6,40,40", "--quiet"]
    assert main([*argv, str(out)]) == 0
    first = _files(out)
    assert len(first) == 5
    assert "wrote 2 mri3d cases" in capsys.readouterr().out
    assert main([*argv, "--seed", "1", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert _files(out) == first  # nothing touched
    assert main([*argv, "--seed", "1", "--overwrite", str(out)]) == 0
    second = _files(out)
    assert second.keys() == first.keys() and second != first
    assert read_image(out / "thigh_000.nii.gz").array.shape == (6, 40, 40)


def test_cli_us2d_and_bad_shape(tmp_path, capsys):
    out = tmp_path / "us"
    assert (
        main(["phantom", "--kind", "us2d", "--cases", "3", "--shape", "64,80", "--quiet", str(out)])
        == 0
    )
    assert len(list((out / "images").glob("*.png"))) == 3
    assert len(list((out / "masks").glob("*.png"))) == 3
    assert len(_rows(out)) == 3
    capsys.readouterr()
    assert main(["phantom", "--kind", "us2d", "--shape", "64,80,3", str(tmp_path / "x")]) == 2
    assert "--shape" in capsys.readouterr().err
    assert main(["phantom", "--kind", "mri3d", "--shape", "3,10,10", str(tmp_path / "y")]) == 2
    assert "too small" in capsys.readouterr().err


def test_held_out_cases_are_the_phantom_cases_in_an_images_and_a_masks_folder(tmp_path):
    from autoseg.io import read_image
    from autoseg.phantoms import Us2dConfig, generate_phantom, write_held_out

    small = Us2dConfig(shape=(48, 64))
    cases = generate_phantom("us2d", tmp_path / "src", 2, seed=2, config=small, progress=False)
    images, masks = write_held_out("us2d", tmp_path / "held", 2, 2, small)
    for case in cases:
        np.testing.assert_array_equal(read_image(images / f"{case.case_id}.png").array, case.image)
        np.testing.assert_array_equal(read_image(masks / f"{case.case_id}.png").array, case.mask)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir())
    assert write_held_out("us2d", tmp_path / "held", 2, 2, small) == (images, masks)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir()) == before
