"""``autoseg convert``: formats, pairing rules, labels, geometry, layouts, resume and the CLI."""

from __future__ import annotations

import csv
import io
import json
import locale
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import autoseg.io.convert as convert_mod
from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.io import Geometry, list_cases, list_test_cases, load_dataset_json, read_image
from autoseg.io.atomic import TMP_MARK
from autoseg.io.convert import (
    convert_folder,
    declare_labels,
    detect_format,
    looks_like_lossy_binary,
    parse_label_map,
    parse_names,
    parse_spacing,
    parse_threshold,
)
from autoseg.io.pairing import frame_names_hint, mask_base, pair_folder, sanitise_case_id
from autoseg.training.splits import make_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAPE = (4, 6, 7)  # (z, y, x)


def _geo(shape_zyx=SHAPE, origin=(-12.5, 30.0, 7.25)) -> Geometry:
    d = sitk.VersorTransform((0.2, 0.1, 0.05), 0.3).GetMatrix()  # a rotated direction
    return Geometry((0.52, 0.6, 4.4), origin, tuple(d), tuple(reversed(shape_zyx)))


def _image(seed=0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(-100, 3000, size=shape).astype(np.int16)


def _mask(seed=0, shape=SHAPE, values=(0, 1, 2)) -> np.ndarray:
    return np.random.default_rng(seed + 100).choice(values, size=shape).astype(np.uint8)


def _write(path: Path, arr: np.ndarray, geo: Geometry | None = None) -> Path:
    from autoseg.io import write_image

    return write_image(path, arr, geo or _geo(arr.shape))


def _convert(src, tmp_path, name="Test", **kw):
    kw.setdefault("num_workers", 1)
    kw.setdefault("progress", False)
    return convert_folder(src, name, root=tmp_path / "root", **kw)


def _errors(result) -> list[str]:
    return [str(p) for p in result.problems if p.severity == "error"]


def _png(path: Path, arr: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr, mode="P" if palette else None)
    if palette:
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Formats: every reader/writer keeps pixels and geometry through convert
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_3d_formats_keep_geometry(tmp_path, ext):
    src = tmp_path / "src"
    arrays = {}
    for i, case in enumerate(["a", "b"]):
        arrays[case] = (_image(i), _mask(i))
        _write(src / "images" / f"{case}{ext}", arrays[case][0])
        _write(src / "masks" / f"{case}{ext}", arrays[case][1])
    result = _convert(src, tmp_path)
    assert result.target.name == "001_Test" and result.n_cases == 2
    assert _errors(result) == []
    ds = load_dataset_json(result.target)
    assert ds.labels == {"background": 0, "label_1": 1, "label_2": 2}
    assert ds.file_ending == ".nii.gz" and ds.num_training == 2
    for case in list_cases(result.target, ds):
        img, lab = read_image(case.images[0]), read_image(case.label)
        np.testing.assert_array_equal(img.array, arrays[case.case_id][0])
        np.testing.assert_array_equal(lab.array, arrays[case.case_id][1])
        assert lab.array.dtype == np.uint8
        for got in (img.geometry, lab.geometry):
            assert got.mismatch(_geo()) is None
            np.testing.assert_allclose(got.direction, _geo().direction, atol=1e-6)
            np.testing.assert_allclose(got.origin, _geo().origin, atol=1e-4)
    assert not (result.target / ".convert_state.json").exists()
    assert not list(result.target.rglob(f"{TMP_MARK}*"))


def _write_dicom_series(folder: Path, arr: np.ndarray, geo: Geometry) -> None:
    # GDCM's writer sets the process locale to "C", after which Python's default text
    # encoding is ASCII and a later test's read_text() of UTF-8 fails: put the locale back.
    before = locale.setlocale(locale.LC_ALL, None)
    try:
        _write_dicom_slices(folder, arr, geo)
    finally:
        locale.setlocale(locale.LC_ALL, before)


def _write_dicom_slices(folder: Path, arr: np.ndarray, geo: Geometry) -> None:
    folder.mkdir(parents=True)
    img = geo.apply_to(sitk.GetImageFromArray(arr))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = geo.direction
    for z in range(arr.shape[0]):
        sl = img[:, :, z]
        pos = img.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7",  # study instance UID
            "0020|000e": "1.2.826.0.1.3680043.2.1125.7.1",  # series instance UID
            "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0013": str(z + 1),
            "0028|0030": f"{geo.spacing[1]}\\{geo.spacing[0]}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_converts_with_geometry(tmp_path):
    src = tmp_path / "src"
    geo = _geo()
    arr, mask = _image(3), _mask(3)
    _write_dicom_series(src / "images" / "pat1", arr, geo)
    _write(src / "masks" / "pat1.nrrd", mask, geo)
    result = _convert(src, tmp_path)
    assert _errors(result) == []
    (case,) = list_cases(result.target)
    assert case.case_id == "pat1"
    img = read_image(case.images[0])
    np.testing.assert_array_equal(img.array, arr)
    assert img.geometry.mismatch(geo) is None
    np.testing.assert_array_equal(read_image(case.label).array, mask)


@pytest.mark.parametrize("drop", ["slice003.dcm", None])
def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, drop):
    src = tmp_path / "src"
    geo = _geo((6, 5, 7))
    _write_dicom_series(src / "images" / "p1", _image(0, (6, 5, 7)), geo)
    _write(src / "masks" / "p1.nii.gz", _mask(0, (5, 5, 7)), _geo((5, 5, 7)))  # as read
    if drop is None:  # a repeated slice instead: two files at one position
        shutil.copy(src / "images/p1/slice003.dcm", src / "images/p1/slice003b.dcm")
    else:
        (src / "images" / "p1" / drop).unlink()
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    assert "DICOM series has a gap" in str(exc.value) and "slice00" in str(exc.value)
    assert not (tmp_path / "root" / "raw").exists()


def test_slice_gap_rule():
    from autoseg.io.image import slice_gap

    assert slice_gap([0.0, 4.4, 8.79999, 13.2]) is None  # rounding in the headers
    assert slice_gap([0.0, 4.4, 13.2, 17.6]) == (1, pytest.approx(8.8), pytest.approx(4.4))
    assert slice_gap([0.0, -2.0, -4.0, -4.0, -6.0])[0] == 2  # a repeated slice
    assert slice_gap([0.0, 3.0]) is None


@pytest.mark.parametrize("what", ["missing", "cut"])
def test_metaimage_without_its_data_is_refused_before_writing(tmp_path, what):
    from autoseg.io import write_image

    src = tmp_path / "src"
    for i, name in enumerate("ab"):
        write_image(src / f"{name}.mhd", _image(i), _geo(), compress=what == "missing")
        _write(src / f"{name}_mask.nii.gz", _mask(i))
    (data,) = [p for p in src.iterdir() if p.name.startswith("b.") and p.suffix != ".mhd"]
    if what == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:50])
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    assert "b.mhd" in str(exc.value) and ("is missing" if what == "missing" else "truncated")
    assert not (tmp_path / "root" / "raw").exists(), "the check pass refuses, a.mhd unwritten"


def test_png_rgb_grey_image_and_palette_mask_with_spacing(tmp_path):
    src = tmp_path / "src"
    grey = np.random.default_rng(1).integers(0, 255, (12, 9), dtype=np.uint8)
    _png(src / "f1.png", np.stack([grey] * 3, axis=-1))  # RGB whose content is grey
    idx = np.zeros((12, 9), np.uint8)
    idx[2:5, 2:5], idx[7:9, 4:8] = 1, 2
    _png(src / "f1_mask.png", idx, palette=True)
    result = _convert(src, tmp_path, spacing=(0.1, 0.2))
    assert _errors(result) == []
    (case,) = list_cases(result.target)
    img, lab = read_image(case.images[0]), read_image(case.label)
    assert img.array.shape == (12, 9) and img.geometry.ndim == 2  # one channel, still 2D
    np.testing.assert_array_equal(img.array, grey)
    np.testing.assert_array_equal(lab.array, idx)  # palette indices, not colours
    assert img.geometry.spacing_zyx == pytest.approx((0.1, 0.2))
    assert lab.geometry.spacing_zyx == pytest.approx((0.1, 0.2))


def test_tinted_grey_rgb_becomes_grey_real_colour_is_refused():
    grey = np.random.default_rng(4).integers(30, 220, (20, 20)).astype(np.int16)
    tint = np.stack([grey + 12, grey, grey - 8], axis=-1).astype(np.uint8)  # sepia-like
    out, tinted = convert_mod.to_grey(tint)
    assert tinted and out.shape == (20, 20) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - grey).max() <= 6
    exact, tinted = convert_mod.to_grey(np.stack([grey.astype(np.uint8)] * 3, axis=-1))
    assert not tinted and np.array_equal(exact, grey)
    doppler = tint.copy()
    doppler[:10, :, 0] = 255  # half the frame strongly red
    doppler[:10, :, 1:] = 0
    with pytest.raises(AutosegError, match="colour"):
        convert_mod.to_grey(doppler)


def test_2d_default_spacing_is_one_and_noted(tmp_path):
    src = tmp_path / "src"
    _png(src / "f1.png", np.full((5, 6), 7, np.uint8))
    _png(src / "f1_mask.png", (np.arange(30).reshape(5, 6) % 2).astype(np.uint8))
    result = _convert(src, tmp_path)
    (case,) = list_cases(result.target)
    assert read_image(case.images[0]).geometry.spacing == (1.0, 1.0)
    assert any("no pixel spacing" in n for n in result.notes)


def test_tif_with_255_mask_needs_and_takes_label_map(tmp_path):
    src = tmp_path / "src"
    arr = np.random.default_rng(2).integers(0, 255, (10, 8), dtype=np.uint8)
    _write(src / "u1.tif", arr, Geometry.default(arr.shape))
    mask = np.zeros((10, 8), np.uint8)
    mask[3:6, 2:5] = 255
    _write(src / "u1_gt.tif", mask, Geometry.default(arr.shape))
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    assert "255" in str(exc.value) and "--labels 255:1" in str(exc.value)
    assert not (tmp_path / "root" / "raw" / "001_Test").exists(), "nothing written on error"
    result = _convert(src, tmp_path, label_map={255: 1}, label_names=["nerve"], spacing=(0.2, 0.3))
    (case,) = list_cases(result.target)
    lab, img = read_image(case.label), read_image(case.images[0])
    np.testing.assert_array_equal(lab.array, mask // 255)
    np.testing.assert_array_equal(img.array, arr)
    assert img.geometry.spacing_zyx == pytest.approx((0.2, 0.3)) and img.geometry.ndim == 2
    assert lab.geometry == img.geometry
    assert load_dataset_json(result.target).labels == {"background": 0, "nerve": 1}


# ---------------------------------------------------------------------------------------------
# Pairing rules
# ---------------------------------------------------------------------------------------------


def test_mask_suffixes_any_case_and_extension(tmp_path):
    src = tmp_path / "src"
    suffixes = ["_mask", "_SEG", "_label", "_Labels", "_gt"]
    for i, suffix in enumerate(suffixes):
        _write(src / f"c{i}.nii.gz", _image(i))
        _write(src / f"c{i}{suffix}.nrrd", _mask(i))
    layout = pair_folder(src)
    assert {c.case_id: c.label.name for c in layout.cases} == {
        f"c{i}": f"c{i}{s}.nrrd" for i, s in enumerate(suffixes)
    }
    assert mask_base("scan_Mask") == "scan" and mask_base("scan") is None


def test_image_without_mask_goes_to_imagests(tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        _write(src / "images" / f"c{i}.nii.gz", _image(i))
    _write(src / "masks" / "c0.nii.gz", _mask(0))
    result = _convert(src, tmp_path)
    assert result.n_cases == 1 and result.n_test == 1
    assert [c.case_id for c in list_test_cases(result.target)] == ["c1"]
    assert any("c1.nii.gz" in n and "imagesTs" in n for n in result.notes)


def test_test_folder_with_masks_goes_to_imagests_and_labelsts(tmp_path):
    src = tmp_path / "src"
    _write(src / "images" / "a.nii.gz", _image(0))
    _write(src / "masks" / "a.nii.gz", _mask(0))
    _write(src / "test" / "images" / "t.nii.gz", _image(1))
    _write(src / "test" / "masks" / "t.nii.gz", _mask(1))
    result = _convert(src, tmp_path)
    assert (result.n_cases, result.n_test) == (1, 1)
    assert (result.target / "imagesTs" / "t_0000.nii.gz").is_file()
    np.testing.assert_array_equal(
        read_image(result.target / "labelsTs" / "t.nii.gz").array, _mask(1)
    )


def test_unpaired_and_ambiguous_files_are_named(tmp_path):
    src = tmp_path / "src"
    _write(src / "a.nii.gz", _image(0))
    _write(src / "a_mask.nii.gz", _mask(0))
    _write(src / "a_seg.nii.gz", _mask(0))
    _write(src / "lonely_gt.nii.gz", _mask(1))
    with pytest.raises(AutosegError) as exc:
        pair_folder(src)
    text = str(exc.value)
    assert "a_mask.nii.gz" in text and "a_seg.nii.gz" in text and "two masks" in text
    assert "lonely_gt.nii.gz" in text and "mask without an image" in text
    assert "--pairs" in text


def test_parallel_folders_unpaired_mask_and_duplicate_stems(tmp_path):
    src = tmp_path / "src"
    _write(src / "images" / "a.nii.gz", _image(0))
    _write(src / "images" / "a.nrrd", _image(0))
    _write(src / "labels" / "a.nii.gz", _mask(0))
    _write(src / "labels" / "zz.nii.gz", _mask(0))
    with pytest.raises(AutosegError) as exc:
        pair_folder(src)
    text = str(exc.value)
    assert "zz.nii.gz" in text and "two image files" in text and "a.nrrd" in text


def test_subfolders_prefix_case_ids_and_sanitise(tmp_path):
    src = tmp_path / "src"
    for site in ("site A", "siteB"):
        _write(src / site / "p 1.nii.gz", _image(0))
        _write(src / site / "p 1_mask.nii.gz", _mask(0))
    ids = sorted(c.case_id for c in pair_folder(src).cases)
    assert ids == ["siteB_p_1", "site_A_p_1"]
    assert sanitise_case_id("a.b c#1") == "a_b_c_1"


def test_case_id_collision_after_sanitising_is_an_error(tmp_path):
    src = tmp_path / "src"
    for stem in ("a b", "a_b"):
        _write(src / f"{stem}.nii.gz", _image(0))
        _write(src / f"{stem}_mask.nii.gz", _mask(0))
    with pytest.raises(AutosegError, match="not unique"):
        pair_folder(src)


def test_channel_suffix_files_group_into_one_case(tmp_path):
    src = tmp_path / "src"
    for c in range(2):
        _write(src / "imagesTr" / f"k1_{c:04d}.nii.gz", _image(c))
    _write(src / "labelsTr" / "k1.nii.gz", _mask(0))
    result = _convert(src, tmp_path, channel_names=["T1", "T2"])
    ds = load_dataset_json(result.target)
    assert ds.channel_names == {"0": "T1", "1": "T2"}
    (case,) = list_cases(result.target, ds)
    np.testing.assert_array_equal(read_image(case.images[1]).array, _image(1))


def test_imagests_with_labelsts_and_dicom_folder_in_one_folder(tmp_path):
    src = tmp_path / "src"
    for c in range(2):
        _write(src / "imagesTr" / f"k1_{c:04d}.nii.gz", _image(c))
        _write(src / "imagesTs" / f"t1_{c:04d}.nii.gz", _image(c))
        _write(src / "imagesTs" / f"t2_{c:04d}.nii.gz", _image(c))
    _write(src / "labelsTr" / "k1.nii.gz", _mask(0))
    _write(src / "labelsTs" / "t1.nii.gz", _mask(0))
    cases = {c.case_id: c for c in pair_folder(src).cases}
    assert set(cases) == {"k1", "t1", "t2"}
    assert cases["t1"].test and cases["t1"].label is not None and len(cases["t2"].images) == 2
    assert cases["t2"].label is None and not cases["k1"].test

    other = tmp_path / "dicom"
    _write_dicom_series(other / "p01", _image(0), _geo())
    _write(other / "p01_mask.nii.gz", _mask(0))
    (case,) = pair_folder(other).cases
    assert case.case_id == "p01" and case.images == (other / "p01",)


def test_pairs_csv_with_channels_and_metadata(tmp_path):
    data = tmp_path / "anywhere"
    rows = []
    for i in range(3):
        _write(data / f"t1_{i}.mha", _image(i))
        _write(data / f"t2_{i}.mha", _image(i + 10))
        _write(data / "seg" / f"s{i}.nrrd", _mask(i))
        rows.append([f"t1_{i}.mha", f"t2_{i}.mha", f"seg/s{i}.nrrd", f"case{i}", f"S{i // 2}"])
    with open(data / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_0000", "image_0001", "mask", "case", "subject"])
        w.writerows(rows)
    result = _convert(tmp_path / "src_unused", tmp_path, pairs_csv=data / "pairs.csv")
    ds = load_dataset_json(result.target)
    assert ds.n_channels == 2 and result.n_cases == 3
    assert ds.subject_of("case0") == "S0" and ds.subject_of("case2") == "S1"
    cases = {c.case_id: c for c in list_cases(result.target, ds)}
    np.testing.assert_array_equal(read_image(cases["case2"].images[1]).array, _image(12))
    assert read_image(cases["case1"].images[0]).geometry.mismatch(_geo()) is None


def test_pairs_csv_missing_file_is_named(tmp_path):
    (tmp_path / "p.csv").write_text("image,mask\nnope.nii.gz,nomask.nii.gz\n")
    with pytest.raises(AutosegError) as exc:
        _convert(tmp_path, tmp_path, pairs_csv=tmp_path / "p.csv")
    assert "nope.nii.gz" in str(exc.value) and "line 2" in str(exc.value)


def test_cases_csv_fills_subject_and_cohort(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        _write(src / f"c{i}.nii.gz", _image(i))
        _write(src / f"c{i}_mask.nii.gz", _mask(i))
    (src / "cases.csv").write_text(
        "case,subject,cohort\nc0,s1,patient\nc1.nii.gz,s1,patient\nc2,s2,control\nghost,s9,x\n"
    )
    result = _convert(src, tmp_path)
    ds = load_dataset_json(result.target)
    assert ds.cases["c0"] == {"subject": "s1", "cohort": "patient"}
    assert ds.cases["c1"] == {"subject": "s1", "cohort": "patient"}  # matched by file name
    assert ds.subject_of("c2") == "s2" and ds.cohort_of("c2") == "control"
    assert any("ghost" in n and "1 row" in n for n in result.notes)


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def test_label_map_and_names(tmp_path):
    src = tmp_path / "src"
    m = _mask(0, values=(0, 128, 255))
    _write(src / "a.nii.gz", _image(0))
    _write(src / "a_mask.nii.gz", m)
    result = _convert(src, tmp_path, label_map={255: 1, 128: 2}, label_names=["nerve", "vessel"])
    (case,) = list_cases(result.target)
    expected = np.select([m == 255, m == 128], [1, 2], 0)
    np.testing.assert_array_equal(read_image(case.label).array, expected)
    assert load_dataset_json(result.target).labels == {"background": 0, "nerve": 1, "vessel": 2}


def test_undeclared_label_values_name_file_and_values(tmp_path):
    src = tmp_path / "src"
    _write(src / "a.nii.gz", _image(0))
    _write(src / "a_mask.nii.gz", _mask(0, values=(0, 1)))
    _write(src / "b.nii.gz", _image(1))
    _write(src / "b_mask.nii.gz", _mask(1, values=(0, 1, 3)))
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path, label_names=["nerve"])
    text = str(exc.value)
    assert "b_mask.nii.gz" in text and "[3]" in text and "--labels" in text
    assert "a_mask" not in text


def test_non_consecutive_values_suggest_a_map():
    with pytest.raises(AutosegError, match="--labels 5:1,7:2"):
        declare_labels({"m.nii.gz": frozenset({0, 5, 7})})
    labels = declare_labels({"m": frozenset({0, 1})}, label_map={255: 1})
    assert labels == {"background": 0, "label_1": 1}
    with pytest.raises(AutosegError, match="empty"):
        declare_labels({"m": frozenset({0})})


def _jpeg_frames(src: Path, subjects=3, frames=3, quality=75, rgb=False) -> dict[str, np.ndarray]:
    """Ultrasound-like frames ``<subject>_<frame>.jpg`` with one-label masks 0/255 saved as JPEG
    (``<subject>_<frame>_mask.jpg``), as in the brachial-plexus set; returns the true masks."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:48, :64]
    truth = {}
    for s in range(subjects):
        for f in range(frames):
            name = f"{s + 1}_{f + 1}"
            img = rng.integers(20, 230, (48, 64), dtype=np.uint8)
            m = ((yy - 24) / 9.0) ** 2 + ((xx - 30 - 2 * f - s) / 14.0) ** 2 < 1
            mask = m.astype(np.uint8) * 255
            Image.fromarray(img).save(src / f"{name}.jpg", quality=quality)
            saved = Image.fromarray(mask).convert("RGB") if rgb else Image.fromarray(mask)
            saved.save(src / f"{name}_mask.jpg", quality=quality)
            truth[name] = m.astype(np.uint8)
    return truth


def test_lossy_binary_rule_numbers():
    yy, xx = np.mgrid[:420, :580]
    ellipse = (((yy - 200) / 30.0) ** 2 + ((xx - 300) / 45.0) ** 2 < 1).astype(np.uint8) * 255
    for quality in (50, 75, 90, 95, 100):  # the qualities the docstring's numbers come from
        buf = io.BytesIO()
        Image.fromarray(ellipse).save(buf, "JPEG", quality=quality)
        decoded = np.array(Image.open(buf)).astype(np.int64)
        values, counts = np.unique(decoded, return_counts=True)
        assert looks_like_lossy_binary(dict(zip(values.tolist(), counts.tolist()))), quality
    assert not looks_like_lossy_binary({0: 900, 255: 100})  # exact 0/255: --labels 255:1
    assert not looks_like_lossy_binary({v: 100 - v for v in range(11)})  # labels 0..10
    image = np.random.default_rng(0).integers(0, 256, 5000)
    values, counts = np.unique(image, return_counts=True)
    assert not looks_like_lossy_binary(dict(zip(values.tolist(), counts.tolist())))


def test_jpeg_binary_masks_suggest_threshold_and_convert_with_it(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    truth = _jpeg_frames(src)
    code, out, err = _cli([str(src), "--name", "BP"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "--threshold 127" in err and "lossy" in err
    assert "renumber" not in err and "--labels" not in err
    assert "\n" not in _error_text(err), "one line"
    assert not (tmp_path / "root" / "raw").exists(), "nothing written"
    code, out, err = _cli(
        [str(src), "--name", "BP", "--threshold", "127", "--label-names", "nerve"],
        capsys,
        monkeypatch,
        tmp_path,
    )
    assert code == 0 and "OK" in out
    target = tmp_path / "root" / "raw" / "001_BP"
    assert load_dataset_json(target).labels == {"background": 0, "nerve": 1}
    for case in list_cases(target):
        np.testing.assert_array_equal(read_image(case.label).array, truth[case.case_id])


def test_rgb_jpeg_masks_are_binarised_with_threshold(tmp_path):
    src = tmp_path / "src"
    truth = _jpeg_frames(src, subjects=1, frames=2, quality=60, rgb=True)
    with pytest.raises(AutosegError, match="--threshold 127"):
        _convert(src, tmp_path)
    result = _convert(src, tmp_path, threshold=127)
    assert _errors(result) == []
    for case in list_cases(result.target):
        np.testing.assert_array_equal(read_image(case.label).array, truth[case.case_id])


def test_0_255_png_masks_keep_labels_suggestion_and_take_threshold(tmp_path):
    src = tmp_path / "src"
    mask = np.zeros((10, 8), np.uint8)
    mask[3:6, 2:5] = 255
    _png(src / "u1.png", np.random.default_rng(2).integers(0, 255, (10, 8), dtype=np.uint8))
    _png(src / "u1_mask.png", mask)
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    assert "--labels 255:1" in str(exc.value) and "(a 0/255 mask is one label)" in str(exc.value)
    result = _convert(src, tmp_path, threshold=127)
    (case,) = list_cases(result.target)
    np.testing.assert_array_equal(read_image(case.label).array, mask // 255)


def test_many_mask_values_get_no_renumbering():
    with pytest.raises(AutosegError) as exc:
        declare_labels({"m.png": frozenset(range(0, 60, 2))})
    assert "--labels" not in str(exc.value) and "30 distinct values" in str(exc.value)
    with pytest.raises(AutosegError) as exc:
        declare_labels({"m.png": frozenset(range(40))}, label_names=["nerve"])
    assert "--labels" not in str(exc.value) and "--threshold" in str(exc.value)


def test_threshold_option_errors(tmp_path):
    src = _small_source(tmp_path / "src", 1)
    with pytest.raises(AutosegError, match="cannot be combined"):
        _convert(src, tmp_path, threshold=127, label_map={255: 1})
    for bad in (0, -1, float("nan")):
        with pytest.raises(AutosegError, match="above 0"):
            _convert(src, tmp_path, threshold=bad)
    with pytest.raises(AutosegError, match="not a number"):
        parse_threshold("half")


# ---------------------------------------------------------------------------------------------
# Subjects from case names
# ---------------------------------------------------------------------------------------------


def test_subject_pattern_records_subjects_and_splits_keep_them_together(tmp_path):
    src = tmp_path / "src"
    _jpeg_frames(src, subjects=5, frames=4)
    result = _convert(src, tmp_path, threshold=127, subject_pattern=r"^(\d+)_")
    assert result.warnings == []
    ds = load_dataset_json(result.target)
    case_ids = [c.case_id for c in list_cases(result.target)]
    assert len(case_ids) == 20
    assert {ds.subject_of(c) for c in case_ids} == {"1", "2", "3", "4", "5"}
    assert ds.cases["3_4"] == {"subject": "3"}
    folds = make_splits(case_ids, [ds.subject_of(c) for c in case_ids], n_folds=5)
    for fold in folds:
        val_subjects = {ds.subject_of(c) for c in fold["val"]}
        assert not val_subjects & {ds.subject_of(c) for c in fold["train"]}
        assert len(fold["val"]) == 4  # all four frames of one subject


def test_frame_names_without_subjects_warn(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    _jpeg_frames(src, subjects=3, frames=3)
    code, out, _ = _cli([str(src), "--name", "BP", "--threshold", "127"], capsys, monkeypatch,
                        tmp_path)  # fmt: skip
    assert code == 0
    (line,) = [t for t in out.splitlines() if t.startswith("warning:")]
    assert "--subject-pattern '^(\\d+)_'" in line and "own subject" in line
    ds = load_dataset_json(tmp_path / "root" / "raw" / "001_BP")
    assert ds.subject_of("2_3") == "2_3"  # the user's choice: warned, not guessed


def test_frame_names_hint_rule():
    assert frame_names_hint([f"{s}_{f}" for s in range(30) for f in range(38)]) == r"^(\d+)_"
    assert frame_names_hint([f"p{s}_{f}" for s in range(3) for f in range(2)]) == r"^(.+)_\d+$"
    assert frame_names_hint([f"case_{i:03d}" for i in range(100)]) is None  # one prefix
    assert frame_names_hint([f"p{i:02d}" for i in range(30)]) is None  # no frame number
    assert frame_names_hint([f"s{i}_1" for i in range(30)]) is None  # one name per prefix


def test_subject_pattern_that_misses_a_name_is_a_clear_error(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    _jpeg_frames(src, subjects=2, frames=2)
    shutil.copy(src / "1_1.jpg", src / "extra.jpg")
    shutil.copy(src / "1_1_mask.jpg", src / "extra_mask.jpg")
    args = [str(src), "--name", "BP", "--threshold", "127", "--subject-pattern", r"^(\d+)_"]
    code, _, err = _cli(args, capsys, monkeypatch, tmp_path)
    assert code == 2 and "extra.jpg" in err and "finds no subject" in err and "Fix:" in err
    assert "\n" not in _error_text(err)
    assert not (tmp_path / "root" / "raw").exists()
    code, _, err = _cli([*args[:-1], "(unclosed"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "not a regular expression" in err


def test_subjects_from_cases_csv_win_over_the_pattern(tmp_path):
    src = tmp_path / "src"
    _jpeg_frames(src, subjects=2, frames=2)
    (src / "cases.csv").write_text("case,subject\n1_1,alice\n")
    result = _convert(src, tmp_path, threshold=127, subject_pattern=r"^(\d+)_")
    ds = load_dataset_json(result.target)
    assert [ds.subject_of(c) for c in ("1_1", "1_2", "2_1")] == ["alice", "1", "2"]


def test_float_integral_mask_is_accepted_non_integral_refused(tmp_path):
    src = tmp_path / "src"
    _write(src / "a.nii.gz", _image(0))
    _write(src / "a_seg.nii.gz", _mask(0).astype(np.float32))
    result = _convert(src, tmp_path)
    (case,) = list_cases(result.target)
    lab = read_image(case.label).array
    assert lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, _mask(0))
    bad = _mask(1).astype(np.float32) * 0.5
    _write(src / "a_seg.nii.gz", bad)
    with pytest.raises(AutosegError, match="non-integer"):
        _convert(src, tmp_path, name="Other")


def test_option_parsers():
    assert parse_label_map("255:1, 128:2") == {255: 1, 128: 2}
    assert parse_names("nerve, vessel") == ["nerve", "vessel"]
    assert parse_spacing("0.1,0.2") == (0.1, 0.2)
    for bad in ("255", "a:b", "1:2,1:3"):
        with pytest.raises(AutosegError):
            parse_label_map(bad)
    with pytest.raises(AutosegError):
        parse_names("a,,b")
    with pytest.raises(AutosegError):
        parse_spacing("0,1")


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def test_header_rounding_is_repaired_real_mismatch_refused(tmp_path):
    src = tmp_path / "src"
    geo = _geo()
    _write(src / "a.nii.gz", _image(0), geo)
    rounded = Geometry(
        tuple(s * (1 + 2e-4) for s in geo.spacing),
        tuple(o + 1e-3 for o in geo.origin),
        geo.direction,
        geo.size,
    )
    _write(src / "a_mask.nii.gz", _mask(0), rounded)
    result = _convert(src, tmp_path)
    (case,) = list_cases(result.target)
    assert read_image(case.label).geometry == read_image(case.images[0]).geometry
    shifted = Geometry(geo.spacing, (0.0, 0.0, 0.0), geo.direction, geo.size)
    _write(src / "a_mask.nii.gz", _mask(0), shifted)
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path, name="Other")
    assert "a_mask.nii.gz" in str(exc.value) and "a.nii.gz" in str(exc.value)
    assert "origin" in str(exc.value)


def test_mixed_2d_and_3d_is_an_error(tmp_path):
    src = tmp_path / "src"
    _write(src / "vol.nii.gz", _image(0))
    _write(src / "vol_mask.nii.gz", _mask(0))
    _png(src / "frame.png", np.full((5, 6), 9, np.uint8))
    _png(src / "frame_mask.png", np.ones((5, 6), np.uint8))
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    assert "2D and 3D" in str(exc.value) and "frame.png" in str(exc.value)


def test_truncated_file_is_named(tmp_path):
    src = tmp_path / "src"
    _write(src / "a.png", np.full((5, 6), 9, np.uint8), Geometry.default((5, 6)))
    _png(src / "a_mask.png", np.ones((5, 6), np.uint8))
    _write(src / "b.png", np.full((5, 6), 9, np.uint8), Geometry.default((5, 6)))
    _png(src / "b_mask.png", np.ones((5, 6), np.uint8))
    data = (src / "b.png").read_bytes()
    (src / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    assert "b.png" in str(exc.value) and "Fix:" in str(exc.value)


def _with_nan(shape=SHAPE, seed=0, fraction=0.486) -> np.ndarray:
    arr = np.random.default_rng(seed).normal(100, 10, shape).astype(np.float32)
    arr[np.random.default_rng(seed + 1).random(shape) < fraction] = np.nan
    return arr


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd"])
def test_nan_voxels_are_refused_before_anything_is_written(tmp_path, ext):
    src = tmp_path / "src"
    shape = (32, 16, 16)  # 8,192 voxels, as in the issue
    nan = _with_nan(shape)
    _write(src / f"a{ext}", _with_nan(shape, fraction=0))
    _write(src / f"a_mask{ext}", _mask(0, shape))
    _write(src / f"b{ext}", nan)
    _write(src / f"b_mask{ext}", _mask(1, shape))
    if ext.startswith(".nii"):  # SimpleITK hides them: the bytes on disk are NaN, it reads 0
        assert not np.isnan(read_image(src / f"b{ext}").array).any()
    with pytest.raises(AutosegError) as exc:
        _convert(src, tmp_path)
    text = str(exc.value)
    assert f"b{ext}: image holds {np.isnan(nan).sum():,} NaN voxels of 8,192" in text
    assert "replace them" in text and f"a{ext}" not in text
    assert not (tmp_path / "root" / "raw").exists()


def test_nan_in_a_float_mask_is_refused(tmp_path):
    src = tmp_path / "src"
    _write(src / "a.nii.gz", _image(0))
    mask = _mask(0).astype(np.float32)
    mask[0, 0, :3] = np.nan
    _write(src / "a_mask.nii.gz", mask)
    with pytest.raises(AutosegError, match=r"a_mask.nii.gz: mask holds 3 NaN voxels"):
        _convert(src, tmp_path, threshold=1)


def test_truncated_nifti_image_is_refused_in_the_check_pass(tmp_path):
    src = _small_source(tmp_path / "src", 3)
    path = src / "images" / "c1.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AutosegError, match="c1.nii.gz: file is truncated"):
        _convert(src, tmp_path)
    assert not (tmp_path / "root" / "raw").exists(), "refused before writing any case"


# ---------------------------------------------------------------------------------------------
# Special layouts
# ---------------------------------------------------------------------------------------------


def test_msd_4d_two_channel_image_is_split(tmp_path):
    src = tmp_path / "Task09_Test"
    geo = _geo()
    vols = [_image(0), _image(1)]
    four_d = sitk.JoinSeries([geo.apply_to(sitk.GetImageFromArray(v)) for v in vols])
    (src / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(four_d, str(src / "imagesTr" / "x_001.nii.gz"))
    (src / "imagesTs").mkdir()
    sitk.WriteImage(four_d, str(src / "imagesTs" / "x_009.nii.gz"))
    (src / "imagesTr" / "._x_001.nii.gz").write_bytes(b"macOS resource fork")
    _write(src / "labelsTr" / "x_001.nii.gz", _mask(0), geo)
    meta = {
        "name": "Test",
        "description": "two-channel test",
        "licence": "CC-BY-SA 4.0",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/x_001.nii.gz", "label": "./labelsTr/x_001.nii.gz"}],
        "test": ["./imagesTs/x_009.nii.gz"],
    }
    (src / "dataset.json").write_text(json.dumps(meta))
    assert detect_format(src) == "msd"
    result = _convert(src, tmp_path)
    assert _errors(result) == []
    ds = load_dataset_json(result.target)
    assert ds.channel_names == {"0": "FLAIR", "1": "T1w"}
    assert ds.labels == {"background": 0, "edema": 1, "tumour": 2}
    assert ds.licence == "CC-BY-SA 4.0" and ds.description == "two-channel test"
    (case,) = list_cases(result.target, ds)
    for c in range(2):
        img = read_image(case.images[c])
        np.testing.assert_array_equal(img.array, vols[c])
        assert img.geometry.ndim == 3 and img.geometry.mismatch(geo) is None
    assert len(list_test_cases(result.target, ds)[0].images) == 2


def _kaggle(src: Path) -> None:
    for subject, image in [(1, 1), (1, 2), (2, 1)]:
        arr = np.random.default_rng(subject * 10 + image).integers(0, 255, (8, 10), np.uint8)
        mask = np.zeros((8, 10), np.uint8)
        if image != 2:
            mask[2:5, 3:6] = 255
        _write(src / "train" / f"{subject}_{image}.tif", arr, Geometry.default(arr.shape))
        _write(src / "train" / f"{subject}_{image}_mask.tif", mask, Geometry.default(arr.shape))
    test_image = np.arange(80, dtype=np.uint8).reshape(8, 10)
    _write(src / "test" / "1.tif", test_image, Geometry.default((8, 10)))
    (src / "train_masks.csv").write_text("subject,img,pixels\n")


def test_kaggle_ultrasound_layout(tmp_path):
    src = tmp_path / "kaggle"
    _kaggle(src)
    assert detect_format(src) == "kaggle-us"
    result = _convert(src, tmp_path, spacing=(0.1, 0.1))
    ds = load_dataset_json(result.target)
    assert ds.labels == {"background": 0, "nerve": 1}
    assert ds.subject_of("1_2") == "1" and ds.subject_of("2_1") == "2"
    assert (result.n_cases, result.n_test) == (3, 1)
    cases = {c.case_id: c for c in list_cases(result.target, ds)}
    assert set(np.unique(read_image(cases["1_1"].label).array)) == {0, 1}
    assert _errors(result) == []  # the empty mask of 1_2 is only a warning
    flat = tmp_path / "flat"
    shutil.copytree(src / "train", flat)
    assert detect_format(flat) == "folder"  # names alone do not make it Kaggle's data
    again = _convert(flat, tmp_path, name="Flat", fmt="kaggle-us")
    assert load_dataset_json(again.target).labels == {"background": 0, "nerve": 1}


def test_nnunet_folder_import_keeps_channels_labels_and_metadata(tmp_path):
    src = tmp_path / "Dataset005_Knee"
    geo = _geo()
    for cid in ("k1", "k2"):
        for c in range(2):
            _write(src / "imagesTr" / f"{cid}_{c:04d}.nii.gz", _image(c), geo)
        _write(src / "labelsTr" / f"{cid}.nii.gz", _mask(1), geo)
    _write(src / "imagesTs" / "k9_0000.nii.gz", _image(0), geo)
    _write(src / "imagesTs" / "k9_0001.nii.gz", _image(1), geo)
    meta = {
        "channel_names": {"0": "PD", "1": "T2"},
        "labels": {"background": 0, "cartilage": 1, "bone": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "reference": "somewhere",
        "cases": {"k1": {"subject": "p7"}},
    }
    (src / "dataset.json").write_text(json.dumps(meta))
    assert detect_format(src) == "nnunet"
    result = _convert(src, tmp_path, name="Knee")
    ds = load_dataset_json(result.target)
    assert ds.channel_names == meta["channel_names"] and ds.labels == meta["labels"]
    assert ds.reference == "somewhere" and ds.subject_of("k1") == "p7"
    assert "overwrite_image_reader_writer" not in ds.extra
    assert (result.n_cases, result.n_test) == (2, 1)
    for case in list_cases(result.target, ds):
        for c in range(2):
            np.testing.assert_array_equal(read_image(case.images[c]).array, _image(c))


# ---------------------------------------------------------------------------------------------
# Target folder: refusal, overwrite, resume
# ---------------------------------------------------------------------------------------------


def _small_source(src: Path, n: int = 5) -> Path:
    for i in range(n):
        _write(src / "images" / f"c{i}.nii.gz", _image(i))
        _write(src / "masks" / f"c{i}.nii.gz", _mask(i))
    return src


def test_existing_target_is_refused_unless_overwrite(tmp_path):
    src = _small_source(tmp_path / "src", 2)
    first = _convert(src, tmp_path)
    with pytest.raises(AutosegError, match="already exists") as exc:
        _convert(src, tmp_path)
    assert "--overwrite" in str(exc.value)
    (first.target / "imagesTr" / "c0_0000.nii.gz").unlink()
    again = _convert(src, tmp_path, overwrite=True)
    assert again.target == first.target and _errors(again) == []
    assert (again.target / "imagesTr" / "c0_0000.nii.gz").is_file()
    other = _convert(src, tmp_path, name="Second")
    assert other.target.name == "002_Second"


def test_target_inside_source_is_refused(tmp_path):
    src = _small_source(tmp_path / "src", 1)
    with pytest.raises(AutosegError, match="overlap"):
        convert_folder(src, "Nested", root=src / "autoseg_data", num_workers=1, progress=False)
    first = _convert(src, tmp_path, name="Own")
    with pytest.raises(AutosegError, match="overlap"):
        _convert(first.target, tmp_path, name="Own", overwrite=True)
    assert (first.target / "dataset.json").is_file(), "the source must survive"


def test_explicit_id_clash_is_refused(tmp_path):
    src = _small_source(tmp_path / "src", 1)
    _convert(src, tmp_path, dataset_id=7)
    with pytest.raises(AutosegError, match="already used by 007_Test"):
        _convert(src, tmp_path, name="Other", dataset_id=7)


def test_resume_finishes_without_rewriting_finished_cases(tmp_path, monkeypatch):
    src = _small_source(tmp_path / "src", 5)
    real = convert_mod._write_case
    calls = []

    def crash_after_two(case, target, settings):
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        calls.append(case.case_id)
        real(case, target, settings)

    monkeypatch.setattr(convert_mod, "_write_case", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _convert(src, tmp_path)
    target = tmp_path / "root" / "raw" / "001_Test"
    assert (target / ".convert_state.json").is_file()
    assert not (target / "dataset.json").exists()
    done = sorted(target.rglob("*.nii.gz"))
    assert len(done) == 4  # two cases: image + mask each
    mtimes = {p: p.stat().st_mtime_ns for p in done}

    # A different option does not resume someone else's work silently.
    monkeypatch.setattr(convert_mod, "_write_case", real)
    with pytest.raises(AutosegError, match="unfinished conversion"):
        _convert(src, tmp_path, label_names=["nerve", "vessel"])

    time.sleep(0.01)
    rewritten = []

    def record(case, target, settings):
        rewritten.append(case.case_id)
        real(case, target, settings)

    monkeypatch.setattr(convert_mod, "_write_case", record)
    result = _convert(src, tmp_path)
    assert result.resumed and result.n_skipped == 2
    assert sorted(rewritten) == sorted({f"c{i}" for i in range(5)} - set(calls))
    assert {p: p.stat().st_mtime_ns for p in done} == mtimes
    assert len(list_cases(result.target)) == 5 and _errors(result) == []
    assert not (target / ".convert_state.json").exists()
    assert load_dataset_json(target).num_training == 5


def test_parallel_workers_give_the_same_result(tmp_path):
    src = _small_source(tmp_path / "src", 3)
    result = _convert(src, tmp_path, num_workers=2)
    assert _errors(result) == [] and result.n_cases == 3
    for case in list_cases(result.target):
        i = int(case.case_id[1:])
        np.testing.assert_array_equal(read_image(case.label).array, _mask(i))


# ---------------------------------------------------------------------------------------------
# CLI: clean errors, exit codes
# ---------------------------------------------------------------------------------------------


def _cli(args, capsys, monkeypatch, tmp_path) -> tuple[int, str, str]:
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    code = main(["convert", *args, "--workers", "1"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _error_text(err: str) -> str:
    """The error message that the CLI printed (after any progress bars), without the newline."""
    return err[err.index("autoseg convert: error:") :].rstrip("\n")


def test_cli_converts_and_reports(tmp_path, capsys, monkeypatch):
    src = _small_source(tmp_path / "src", 2)
    code, out, _ = _cli([str(src), "--name", "Cli", "--label-names", "a,b"], capsys, monkeypatch,
                        tmp_path)  # fmt: skip
    assert code == 0 and "converted 2 training case(s)" in out
    labels = load_dataset_json(tmp_path / "root" / "raw" / "001_Cli").labels
    assert labels == {"background": 0, "a": 1, "b": 2}


@pytest.mark.parametrize(
    "setup, args, expected",
    [
        ("empty", [], "no images found"),
        ("missing", [], "not found"),
        ("good", ["--label-names", "nerve"], "not declared"),
        ("good", ["--labels", "x"], "OLD:NEW"),
        ("good", ["--spacing", "1,2,3,4"], "2 or 3"),
        ("good", ["--channel-names", "T1,T2"], "channel name"),
        ("exists", [], "already exists"),
        ("good", ["--to", "nnunet"], "--out"),
        ("mismatch", [], "does not match"),
    ],
)
def test_cli_errors_exit_2_without_traceback(tmp_path, capsys, monkeypatch, setup, args, expected):
    src = tmp_path / "src"
    if setup in ("good", "exists", "mismatch"):
        _small_source(src, 2)
    if setup == "empty":
        src.mkdir()
    if setup == "exists":
        (tmp_path / "root" / "raw" / "001_Cli").mkdir(parents=True)
        (tmp_path / "root" / "raw" / "001_Cli" / "notes.txt").write_text("mine")
    if setup == "mismatch":
        _write(src / "masks" / "c1.nii.gz", _mask(1, shape=(4, 6, 8)))
    code, out, err = _cli([str(src), "--name", "Cli", *args], capsys, monkeypatch, tmp_path)
    assert code == 2
    assert "error:" in err and expected in err
    assert "Fix:" in err or "usage" in err.lower()


def test_cli_prints_verify_errors_and_exits_1(tmp_path, capsys, monkeypatch):
    src = _small_source(tmp_path / "src", 2)
    _write(src / "images" / "c1.nii.gz", np.zeros(SHAPE, np.int16))  # blank: verify's error
    code, out, _ = _cli([str(src), "--name", "Blank"], capsys, monkeypatch, tmp_path)
    assert code == 1
    assert "c1_0000.nii.gz" in out and "blank" in out and "1 error" in out


def test_cli_requires_name_for_a_folder(tmp_path, capsys, monkeypatch):
    src = _small_source(tmp_path / "src", 1)
    code, _, err = _cli([str(src)], capsys, monkeypatch, tmp_path)
    assert code == 2 and "--name" in err


# ---------------------------------------------------------------------------------------------
# Real data: usgra-seg ultrasound (nerve = 1, vessel = 2)
# ---------------------------------------------------------------------------------------------


def test_usgra_pairs_keep_labels(tmp_path):
    data = SHARED / "usgra_seg" / "dataset"
    if not (data / "images").is_dir():
        pytest.skip("shared usgra_seg data not available")
    names = sorted(p.name for p in (data / "images").glob("*.png"))[::34][:6]  # grey and RGB
    src = tmp_path / "src"
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(data / sub / n, src / sub / n)
    result = _convert(src, tmp_path, name="USGRA", label_names=["nerve", "vessel"],
                      spacing=(0.08, 0.08))  # fmt: skip
    assert _errors(result) == [] and result.n_cases == 6
    seen: set[int] = set()
    for case in list_cases(result.target):
        img, lab = read_image(case.images[0]), read_image(case.label)
        assert img.array.ndim == 2 and img.geometry.spacing == pytest.approx((0.08, 0.08))
        src_mask = np.array(Image.open(data / "masks" / f"{case.case_id}.png"))
        np.testing.assert_array_equal(lab.array, src_mask)
        seen |= set(np.unique(lab.array).tolist())
    assert seen == {0, 1, 2}


def test_state_file_records_source_and_options(tmp_path, monkeypatch):
    src = _small_source(tmp_path / "src", 2)

    def boom(case, target, settings):
        raise RuntimeError("stop")

    monkeypatch.setattr(convert_mod, "_write_case", boom)
    with pytest.raises(RuntimeError):
        _convert(src, tmp_path, label_map={2: 1}, spacing=(0.5, 0.5))
    state = json.loads((tmp_path / "root/raw/001_Test/.convert_state.json").read_text())
    assert state["source"] == str(src.resolve())
    assert state["options"]["label_map"] == [[2, 1]]
    assert os.path.isdir(tmp_path / "root/raw/001_Test")
