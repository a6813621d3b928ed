"""Every malformed input we know of, in one table, each run through the CLI in this process.

For each input the command must exit non-zero (2 for a user error; 1 where ``verify`` reports
what it found), print one error (no traceback) that contains the table's key phrase and a
fix, and leave every file as it was: nothing half-written, no target folder.
documentation/dataset_format.md ("Inputs autoseg refuses") lists the same inputs for users.

A builder gets the test's folder, creates ``src/`` (and sometimes a dataset under
``root/``) there, and returns the command line; ``$AUTOSEG_ROOT`` is ``<tmp>/root``.
"""

from __future__ import annotations

import hashlib
import json
import locale
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from test_convert import _write_dicom_series

from autoseg.cli import main
from autoseg.io import DatasetJson, Geometry, write_image

SHAPE = (4, 6, 7)  # (z, y, x)


def _geo(shape=SHAPE, origin=(-12.5, 30.0, 7.25)) -> Geometry:
    return Geometry((0.5, 0.6, 4.0), origin, (1, 0, 0, 0, 1, 0, 0, 0, 1), tuple(reversed(shape)))


def _image(seed=0, shape=SHAPE, dtype=np.int16) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 3000, size=shape).astype(dtype)


def _mask(seed=0, shape=SHAPE, values=(0, 1)) -> np.ndarray:
    return np.random.default_rng(seed + 100).choice(values, size=shape).astype(np.uint8)


def _vol(path: Path, arr: np.ndarray, geo: Geometry | None = None) -> Path:
    return write_image(path, arr, geo or _geo(arr.shape))


def _png(path: Path, arr: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if palette:
        im = im.convert("P") if arr.ndim == 3 else Image.fromarray(arr, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    im.save(path)
    return path


def _frame(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 230, (12, 16), dtype=np.uint8)


def _blob(value=1, dtype=np.uint8) -> np.ndarray:
    m = np.zeros((12, 16), dtype)
    m[3:8, 4:11] = value
    return m


def _convert(tmp: Path, *args: str) -> list[str]:
    return ["convert", str(tmp / "src"), "--name", "X", "--workers", "1", *args]


def _pair(src: Path, name="a", seed=0, ext=".nii.gz", **mask_kw) -> None:
    _vol(src / f"{name}{ext}", _image(seed))
    _vol(src / f"{name}_mask{ext}", _mask(seed, **mask_kw))


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---------------------------------------------------------------------------------------------
# Builders: one per bad input
# ---------------------------------------------------------------------------------------------


def empty_folder(tmp):
    (tmp / "src").mkdir()
    return _convert(tmp)


def missing_folder(tmp):
    return _convert(tmp)


def images_without_masks(tmp):
    _png(tmp / "src" / "a.png", _frame())
    return _convert(tmp)


def mask_without_image(tmp):
    _pair(tmp / "src")
    _vol(tmp / "src" / "b_mask.nii.gz", _mask(1))
    return _convert(tmp)


def two_masks_for_one_image(tmp):
    _pair(tmp / "src")
    _vol(tmp / "src" / "a_seg.nii.gz", _mask(1))
    return _convert(tmp)


def two_images_one_name(tmp):
    _pair(tmp / "src")
    _vol(tmp / "src" / "a.nrrd", _image(1))
    return _convert(tmp)


def case_ids_collide(tmp):
    src = tmp / "src"
    for i, name in enumerate(("a b", "a_b")):
        _png(src / f"{name}.png", _frame(i))
        _png(src / f"{name}_mask.png", _blob())
    return _convert(tmp)


def size_mismatch(tmp):
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", np.zeros((12, 15), np.uint8))
    return _convert(tmp)


def origin_mismatch(tmp):
    _vol(tmp / "src" / "a.nii.gz", _image())
    _vol(tmp / "src" / "a_mask.nii.gz", _mask(), _geo(origin=(0.0, 0.0, 0.0)))
    return _convert(tmp)


def nan_in_nifti(tmp):
    _pair(tmp / "src")
    arr = _image(1).astype(np.float32)
    arr[0, :2, :3] = np.nan
    _vol(tmp / "src" / "b.nii.gz", arr)
    _vol(tmp / "src" / "b_mask.nii.gz", _mask(1))
    return _convert(tmp)


def inf_in_nrrd(tmp):
    arr = _image(0).astype(np.float32)
    arr[1, 1, 1] = np.inf
    _vol(tmp / "src" / "a.nrrd", arr)
    _vol(tmp / "src" / "a_mask.nrrd", _mask(0))
    return _convert(tmp)


def nan_in_float_mask(tmp):
    _vol(tmp / "src" / "a.nii.gz", _image())
    mask = _mask().astype(np.float32)
    mask[0, 0, 0] = np.nan
    _vol(tmp / "src" / "a_mask.nii.gz", mask)
    return _convert(tmp)


def truncated_nii_gz(tmp):
    _pair(tmp / "src")
    _pair(tmp / "src", "b", 1)
    _cut(tmp / "src" / "b.nii.gz", 0.5)
    return _convert(tmp)


def truncated_nii(tmp):
    _pair(tmp / "src", ext=".nii")
    _pair(tmp / "src", "b", 1, ext=".nii")
    _cut(tmp / "src" / "b.nii", 0.8)
    return _convert(tmp)


def truncated_tiff_stack(tmp):
    src = tmp / "src"
    src.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(_image(0, (20, 6, 7))), str(src / "a.tif"))
    _vol(src / "a_mask.nii.gz", _mask(0, (7, 6, 7)), Geometry.default((7, 6, 7)))
    _cut(src / "a.tif", 0.35)  # SimpleITK reads the first 7 of 20 slices without an error
    return _convert(tmp)


def truncated_png(tmp):
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", _blob())
    _cut(tmp / "src" / "a.png", 0.5)
    return _convert(tmp)


def truncated_mha(tmp):
    _pair(tmp / "src", ext=".mha")
    _pair(tmp / "src", "b", 1, ext=".mha")
    _cut(tmp / "src" / "b.mha", 0.9)
    return _convert(tmp)


def mhd_without_its_raw(tmp):
    _pair(tmp / "src", ext=".nii.gz")
    write_image(tmp / "src" / "b.mhd", _image(1), _geo())
    _vol(tmp / "src" / "b_mask.nii.gz", _mask(1))
    (tmp / "src" / "b.zraw").unlink()
    return _convert(tmp)


def truncated_nrrd(tmp):
    _pair(tmp / "src", ext=".nrrd")
    _pair(tmp / "src", "b", 1, ext=".nrrd")
    _cut(tmp / "src" / "b.nrrd", 0.7)
    return _convert(tmp)


def dicom_series_missing_a_slice(tmp):
    src = tmp / "src"
    _write_dicom_series(src / "images" / "p1", _image(0, (6, 5, 7)), _geo((6, 5, 7)))
    (src / "images" / "p1" / "slice003.dcm").unlink()
    _vol(src / "masks" / "p1.nii.gz", _mask(0, (5, 5, 7)), _geo((5, 5, 7)))
    return _convert(tmp)


def two_dicom_series_in_one_folder(tmp):
    src = tmp / "src"
    _write_dicom_series(src / "images" / "p1", _image(0, (3, 5, 7)), _geo((3, 5, 7)))
    other = tmp / "other"
    _write_dicom_series(other, _image(1, (3, 5, 7)), _geo((3, 5, 7)))
    before = locale.setlocale(locale.LC_ALL, None)  # GDCM's writer sets it to "C"
    for i, f in enumerate(sorted(other.iterdir())):
        img = sitk.ReadImage(str(f))
        img.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.7.2")  # another series UID
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(src / "images" / "p1" / f"other{i}.dcm"))
        writer.Execute(img)
    locale.setlocale(locale.LC_ALL, before)
    shutil.rmtree(other)
    _vol(src / "masks" / "p1.nii.gz", _mask(0, (3, 5, 7)), _geo((3, 5, 7)))
    return _convert(tmp)


def corrupt_jpeg(tmp):
    _png(tmp / "src" / "a_mask.png", _blob())
    (tmp / "src" / "a.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    return _convert(tmp)


def empty_file(tmp):
    _pair(tmp / "src")
    (tmp / "src" / "b.nii.gz").write_bytes(b"")
    _vol(tmp / "src" / "b_mask.nii.gz", _mask(1))
    return _convert(tmp)


def undeclared_label_value(tmp):
    _pair(tmp / "src", values=(0, 1, 2))
    return _convert(tmp, "--label-names", "nerve")


def label_values_with_gaps(tmp):
    _pair(tmp / "src", values=(0, 5, 7))
    return _convert(tmp)


def mask_0_255(tmp):
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", _blob(255))
    return _convert(tmp)


def jpeg_saved_binary_masks(tmp):
    src = tmp / "src"
    src.mkdir()
    yy, xx = np.mgrid[:48, :64]
    for f in range(3):
        Image.fromarray(_frame(f)).resize((64, 48)).save(src / f"7_{f}.jpg", quality=75)
        blob = ((yy - 24) / 9.0) ** 2 + ((xx - 30 - f) / 14.0) ** 2 < 1
        Image.fromarray(blob.astype(np.uint8) * 255).save(src / f"7_{f}_mask.jpg", quality=75)
    return _convert(tmp)


def image_saved_as_mask(tmp):
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", _frame(1))
    return _convert(tmp)


def colour_mask(tmp):
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[2:5, 2:5] = (255, 0, 0)
    rgb[6:9, 6:9] = (0, 255, 0)
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", rgb)
    return _convert(tmp)


def palette_mask_with_gap(tmp):
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", _blob(3), palette=True)
    return _convert(tmp)


def sixteen_bit_png_mask(tmp):
    _png(tmp / "src" / "a.png", _frame())
    _png(tmp / "src" / "a_mask.png", _blob(1000, np.uint16))
    return _convert(tmp)


def non_integer_mask(tmp):
    _vol(tmp / "src" / "a.nii.gz", _image())
    _vol(tmp / "src" / "a_mask.nii.gz", _mask().astype(np.float32) * 0.5)
    return _convert(tmp)


def negative_mask(tmp):
    _vol(tmp / "src" / "a.nii.gz", _image())
    _vol(tmp / "src" / "a_mask.nii.gz", _mask(values=(0, 1)).astype(np.int16) - 1)
    return _convert(tmp)


def four_d_mask(tmp):
    _vol(tmp / "src" / "a.nii.gz", _image())
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(_mask(0)), sitk.GetImageFromArray(_mask(1))])
    sitk.WriteImage(four_d, str(tmp / "src" / "a_mask.nii.gz"))
    return _convert(tmp)


def colour_image(tmp):
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0] = _frame()
    rgb[..., 2] = 255 - _frame()  # colour Doppler-like: channels far apart
    _png(tmp / "src" / "a.png", rgb)
    _png(tmp / "src" / "a_mask.png", _blob())
    return _convert(tmp)


def mixed_channel_counts(tmp):
    src = tmp / "src"
    for c in range(2):
        _vol(src / "images" / f"a_{c:04d}.nii.gz", _image(c))
    _vol(src / "images" / "b_0000.nii.gz", _image(3))
    _vol(src / "masks" / "a.nii.gz", _mask(0))
    _vol(src / "masks" / "b.nii.gz", _mask(1))
    return _convert(tmp)


def mixed_2d_and_3d(tmp):
    _pair(tmp / "src")
    _png(tmp / "src" / "f.png", _frame())
    _png(tmp / "src" / "f_mask.png", _blob())
    return _convert(tmp)


def nnunet_json_declares_a_missing_channel(tmp):
    src = tmp / "src"
    _nnunet_source(src, channels={"0": "T1", "1": "T2"})
    return _convert(tmp)


def nnunet_json_declares_too_few_labels(tmp):
    src = tmp / "src"
    _nnunet_source(src, mask_values=(0, 1, 2))
    return _convert(tmp)


def _nnunet_source(src: Path, channels=None, mask_values=(0, 1)) -> None:
    ds = {
        "channel_names": channels or {"0": "T1"},
        "labels": {"background": 0, "nerve": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    src.mkdir(parents=True)
    (src / "dataset.json").write_text(json.dumps(ds))
    _vol(src / "imagesTr" / "a_0000.nii.gz", _image())
    _vol(src / "labelsTr" / "a.nii.gz", _mask(values=mask_values))


def msd_json_lists_a_missing_file(tmp):
    src = tmp / "src"
    src.mkdir()
    meta = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "nerve"},
        "training": [
            {"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
            {"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"},
        ],
    }
    (src / "dataset.json").write_text(json.dumps(meta))
    _vol(src / "imagesTr" / "a.nii.gz", _image())
    _vol(src / "labelsTr" / "a.nii.gz", _mask())
    _vol(src / "labelsTr" / "b.nii.gz", _mask(1))
    return _convert(tmp)


def pairs_csv_names_a_missing_file(tmp):
    _pair(tmp / "src")
    (tmp / "src" / "pairs.csv").write_text("image,mask\na.nii.gz,a_mask.nii.gz\na.nii.gz,b.nrrd\n")
    return _convert(tmp, "--pairs", str(tmp / "src" / "pairs.csv"))


def pairs_csv_without_mask_column(tmp):
    _pair(tmp / "src")
    (tmp / "src" / "pairs.csv").write_text("image,segmentation\na.nii.gz,a_mask.nii.gz\n")
    return _convert(tmp, "--pairs", str(tmp / "src" / "pairs.csv"))


def cases_csv_without_case_column(tmp):
    _pair(tmp / "src")
    (tmp / "src" / "cases.csv").write_text("file,subject\na,s1\n")
    return _convert(tmp)


def subject_pattern_misses_a_name(tmp):
    src = tmp / "src"
    for name in ("12_1", "12_2", "scan"):
        _png(src / f"{name}.png", _frame())
        _png(src / f"{name}_mask.png", _blob())
    return _convert(tmp, "--subject-pattern", r"^(\d+)_")


def several_damaged_files(tmp):
    for i, name in enumerate("abc"):
        _pair(tmp / "src", name, i)
        if name != "a":
            _cut(tmp / "src" / f"{name}.nii.gz", 0.5)
    return _convert(tmp)


def target_exists(tmp):
    _pair(tmp / "src")
    (tmp / "root" / "raw" / "001_X").mkdir(parents=True)
    (tmp / "root" / "raw" / "001_X" / "notes.txt").write_text("mine")
    return _convert(tmp)


def threshold_with_labels(tmp):
    _pair(tmp / "src")
    return _convert(tmp, "--threshold", "127", "--labels", "255:1")


def malformed_labels_option(tmp):
    _pair(tmp / "src")
    return _convert(tmp, "--labels", "255")


def _dataset(tmp: Path, **changes) -> Path:
    """A valid converted dataset of two 3D cases, then dataset.json changed as given."""
    folder = tmp / "root" / "raw" / "001_X"
    for i in range(2):
        _vol(folder / "imagesTr" / f"c{i}_0000.nii.gz", _image(i))
        _vol(folder / "labelsTr" / f"c{i}.nii.gz", _mask(i))
    ds = DatasetJson({"0": "T1"}, {"background": 0, "nerve": 1}, 2, ".nii.gz").to_dict()
    ds.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del ds[key]
    (folder / "dataset.json").write_text(json.dumps(ds))
    return folder


def dataset_json_lies_about_num_training(tmp):
    _dataset(tmp, numTraining=5)
    return ["verify", "1", "--workers", "1"]


def dataset_json_lies_about_labels(tmp):
    folder = _dataset(tmp)
    _vol(folder / "labelsTr" / "c1.nii.gz", _mask(1, values=(0, 1, 2)))
    return ["verify", "1", "--workers", "1"]


def dataset_json_lacks_keys(tmp):
    _dataset(tmp, file_ending=None)
    return ["verify", "1", "--workers", "1"]


def dataset_image_holds_nan(tmp):
    folder = _dataset(tmp)
    arr = _image(0).astype(np.float32)
    arr[0, 0, :4] = np.nan
    _vol(folder / "imagesTr" / "c0_0000.nii.gz", arr)
    return ["verify", "1", "--workers", "1"]


def plan_from_a_newer_version(tmp):
    _dataset(tmp)
    plans = tmp / "root" / "preprocessed" / "001_X" / "plans.json"
    plans.parent.mkdir(parents=True)
    plans.write_text(json.dumps({"schema_version": 99, "a_field_of_the_future": {}}))
    return ["preprocess", "1", "--workers", "1", "--no-progress"]


def plan_that_is_not_json(tmp):
    _dataset(tmp)
    plans = tmp / "root" / "preprocessed" / "001_X" / "plans.json"
    plans.parent.mkdir(parents=True)
    plans.write_text('{"schema_version": 1,')
    return ["preprocess", "1", "--workers", "1", "--no-progress"]


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    build: Callable[[Path], list[str]]
    phrase: str  # in the error (exit 2) or in verify's report (exit 1)
    code: int = 2
    lines: int = 1  # an error that lists several problems gives one line to each

    @property
    def name(self) -> str:
        return self.build.__name__


BAD_INPUTS = [
    # source folders and pairing
    Bad(empty_folder, "no images found"),
    Bad(missing_folder, "source folder not found"),
    Bad(images_without_masks, "none of the 1 images has a mask"),
    Bad(mask_without_image, "mask without an image"),
    Bad(two_masks_for_one_image, "two masks for"),
    Bad(two_images_one_name, "two image files with the name 'a'"),
    Bad(case_ids_collide, "case ids are not unique"),
    Bad(pairs_csv_names_a_missing_file, "b.nrrd does not exist"),
    Bad(pairs_csv_without_mask_column, "needs columns 'image' and 'mask'"),
    Bad(cases_csv_without_case_column, "needs a 'case' column"),
    Bad(subject_pattern_misses_a_name, "finds no subject in case 'scan'"),
    Bad(nnunet_json_declares_a_missing_channel, "a_0001.nii.gz is missing"),
    Bad(nnunet_json_declares_too_few_labels, "not declared"),
    Bad(msd_json_lists_a_missing_file, "b.nii.gz is listed in 'training' but does not exist"),
    # grids, dimensions, channels
    Bad(size_mismatch, "mask does not match its image"),
    Bad(origin_mismatch, "origin"),
    Bad(mixed_channel_counts, "cases differ in their number of channels"),
    Bad(mixed_2d_and_3d, "2D and 3D mixed"),
    Bad(colour_image, "image is in colour"),
    Bad(dicom_series_missing_a_slice, "DICOM series has a gap"),
    Bad(two_dicom_series_in_one_folder, "folder holds 2 DICOM series"),
    # damaged files
    Bad(truncated_nii_gz, "file is truncated"),
    Bad(truncated_nii, "file is truncated"),
    Bad(truncated_tiff_stack, "file is truncated"),
    Bad(truncated_nrrd, "file is truncated"),
    Bad(truncated_mha, "file is truncated"),
    Bad(mhd_without_its_raw, "its data file b.zraw is missing"),
    Bad(truncated_png, "cannot read image"),
    Bad(corrupt_jpeg, "cannot read image"),
    Bad(empty_file, "cannot read image header"),
    Bad(several_damaged_files, "2 case(s) cannot be converted", lines=4),
    # voxel values
    Bad(nan_in_nifti, "image holds 6 NaN voxels of 168 (SimpleITK reads them as 0"),
    Bad(inf_in_nrrd, "image holds 1 Inf voxels of 168"),
    Bad(nan_in_float_mask, "mask holds 1 NaN voxels"),
    Bad(non_integer_mask, "non-integer"),
    Bad(negative_mask, "negative values"),
    Bad(four_d_mask, "mask is 4D"),
    # label values
    Bad(undeclared_label_value, "not declared (background=0, nerve=1)"),
    Bad(label_values_with_gaps, "--labels 5:1,7:2"),
    Bad(mask_0_255, "--labels 255:1 (a 0/255 mask is one label)"),
    Bad(jpeg_saved_binary_masks, "--threshold 127"),
    Bad(image_saved_as_mask, "distinct values"),
    Bad(colour_mask, "mask is a colour image"),
    Bad(palette_mask_with_gap, "--labels 3:1"),
    Bad(sixteen_bit_png_mask, "--labels 1000:1"),
    # options and targets
    Bad(target_exists, "dataset folder already exists"),
    Bad(threshold_with_labels, "cannot be combined"),
    Bad(malformed_labels_option, "is not OLD:NEW"),
    # converted datasets that lie, and plans
    Bad(dataset_json_lies_about_num_training, "numTraining is 5 but labelsTr holds 2", 1),
    Bad(dataset_json_lies_about_labels, "undeclared values 2", 1),
    Bad(dataset_json_lacks_keys, "dataset.json lacks file_ending", 1),
    Bad(dataset_image_holds_nan, "image holds 4 non-finite voxels (4 NaN, 0 Inf)", 1),
    Bad(plan_from_a_newer_version, "written by a newer autoseg"),
    Bad(plan_that_is_not_json, "not valid JSON"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with a hash of its content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def test_the_table_is_the_promised_size_and_unique():
    names = [b.name for b in BAD_INPUTS]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.name)
def test_bad_input_is_refused_cleanly(bad: Bad, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    argv = bad.build(tmp_path)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == bad.code, out + err
    if code == 2:
        prefix = f"autoseg {argv[0]}: error: "
        assert err.count(prefix) == 1, err
        message = err[err.index(prefix) + len(prefix) :].rstrip("\n")
        assert message.count("\n") + 1 == bad.lines, message
        assert bad.phrase in message and "Fix:" in message, message
    else:
        assert bad.phrase in out and "Fix:" in out, out
    assert _snapshot(tmp_path) == before, "nothing may be written, changed or removed"
