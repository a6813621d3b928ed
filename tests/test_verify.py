"""Tests for autoseg.io.verify and ``autoseg verify``: one tiny broken dataset per failure kind."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import autoseg.io.verify as verify_module
from autoseg.cli import main
from autoseg.io import DatasetJson, Geometry, write_image
from autoseg.io.nifti import nifti_truncation
from autoseg.io.verify import (
    Problem,
    content_problems,
    summary_line,
    value_counts,
    verify_dataset,
)

SHAPE_3D = (4, 12, 10)  # (z, y, x)
SPACING_3D = (3.0, 0.5, 0.5)
SHAPE_2D = (12, 10)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --------------------------------------------------------------------------------------------
# Building tiny datasets


def _image(shape: tuple[int, ...], seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 200).astype(dtype)


def _mask(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    m = np.zeros(shape, dtype)
    m[(slice(None),) * (len(shape) - 2) + (slice(3, 7), slice(2, 6))] = 1
    return m


def make_dataset(
    root: Path,
    *,
    n_cases: int = 3,
    channels: int = 2,
    dims: int = 3,
    labels: dict[str, int] | None = None,
) -> Path:
    """A valid dataset: 3D .nii.gz (4x12x10, 3x0.5x0.5 mm) or 2D .png (12x10)."""
    ending = ".nii.gz" if dims == 3 else ".png"
    shape = SHAPE_3D if dims == 3 else SHAPE_2D
    geom = Geometry.default(shape, SPACING_3D if dims == 3 else None)
    dtype = np.float32 if dims == 3 else np.uint8
    for i in range(n_cases):
        for c in range(channels):
            write_image(
                root / "imagesTr" / f"case{i}_{c:04d}{ending}", _image(shape, i, dtype), geom
            )
        write_image(root / "labelsTr" / f"case{i}{ending}", _mask(shape), geom)
    DatasetJson(
        channel_names={str(c): f"ch{c}" for c in range(channels)},
        labels=labels or {"background": 0, "nerve": 1},
        num_training=n_cases,
        file_ending=ending,
    ).save(root)
    return root


def verify(root: Path, **kw) -> list[Problem]:
    kw.setdefault("num_workers", 1)
    return verify_dataset(root, progress=False, **kw)


def about(problems: list[Problem], file_name: str) -> list[Problem]:
    """The problems whose path is the file named (the test's check that the right file is named)."""
    return [p for p in problems if Path(p.path).name == file_name]


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


@pytest.fixture
def ds3(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "012_Nerves")


# --------------------------------------------------------------------------------------------
# Valid datasets


def test_valid_3d_dataset_has_no_problems(ds3: Path):
    assert verify(ds3) == []


def test_valid_2d_png_dataset_has_no_problems(tmp_path: Path):
    root = make_dataset(tmp_path / "003_Median", dims=2, channels=1)
    assert verify(root) == []


def test_test_cases_are_checked_too(ds3: Path):
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    write_image(ds3 / "imagesTs" / "new_0000.nii.gz", _image(SHAPE_3D, 9), geom)
    problems = verify(ds3)
    (p,) = problems
    assert Path(p.path) == ds3 / "imagesTs" / "new_0001.nii.gz"
    assert "missing" in p.what and "channel 1" in p.what
    write_image(ds3 / "imagesTs" / "new_0001.nii.gz", np.zeros(SHAPE_3D, np.float32), geom)
    (p,) = verify(ds3)
    assert Path(p.path).name == "new_0001.nii.gz" and "blank" in p.what


# --------------------------------------------------------------------------------------------
# Layout


def test_missing_channel(ds3: Path):
    (ds3 / "imagesTr" / "case1_0001.nii.gz").unlink()
    (p,) = verify(ds3)
    assert Path(p.path) == ds3 / "imagesTr" / "case1_0001.nii.gz"
    assert "channel 1 (ch1)" in p.what and "case1" in p.what and "missing" in p.what
    assert p.severity == "error"


def test_orphan_image(ds3: Path):
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    for c in range(2):
        write_image(ds3 / "imagesTr" / f"lonely_{c:04d}.nii.gz", _image(SHAPE_3D, 5), geom)
    (p,) = verify(ds3)
    assert Path(p.path).name == "lonely_0000.nii.gz"
    assert "no mask" in p.what and "labelsTr/lonely.nii.gz" in p.what


def test_wrong_num_training(ds3: Path):
    data = json.loads((ds3 / "dataset.json").read_text())
    data["numTraining"] = 5
    (ds3 / "dataset.json").write_text(json.dumps(data))
    (p,) = verify(ds3)
    assert Path(p.path).name == "dataset.json"
    assert "numTraining is 5" in p.what and "3 cases" in p.what
    assert '"numTraining": 3' in p.fix


def test_bad_names_and_endings(ds3: Path):
    img = ds3 / "imagesTr"
    shutil.copy(img / "case0_0000.nii.gz", img / "nochannel.nii.gz")
    shutil.copy(img / "case0_0000.nii.gz", img / "case0_0007.nii.gz")
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    write_image(img / "case5_0000.nii", _image(SHAPE_3D, 1), geom)
    (img / "notes.txt").write_text("scanner notes")
    (img / ".partial-1a2b3c4d.case0_0000.nii.gz").write_bytes(b"")
    (img / ".DS_Store").write_bytes(b"")  # hidden files are ignored
    problems = verify(ds3)
    assert "does not follow" in about(problems, "nochannel.nii.gz")[0].what
    assert "channel 0007 is not declared" in about(problems, "case0_0007.nii.gz")[0].what
    (wrong,) = about(problems, "case5_0000.nii")
    assert "'.nii'" in wrong.what and "'.nii.gz'" in wrong.what
    (txt,) = about(problems, "notes.txt")
    assert txt.severity == "warning"
    (partial,) = about(problems, ".partial-1a2b3c4d.case0_0000.nii.gz")
    assert partial.severity == "warning" and "interrupted" in partial.what
    assert not about(problems, ".DS_Store")
    assert len(problems) == 5


def test_unreadable_dataset_json(ds3: Path):
    (ds3 / "dataset.json").write_text('{"labels": {"background": 0,')
    (p,) = verify(ds3)
    assert Path(p.path) == ds3 / "dataset.json"
    assert "JSON" in p.what and p.fix
    assert not p.what.startswith(str(ds3))  # the path is not repeated inside `what`


def test_dataset_json_missing_keys_and_missing_file(ds3: Path):
    data = json.loads((ds3 / "dataset.json").read_text())
    del data["file_ending"]
    (ds3 / "dataset.json").write_text(json.dumps(data))
    (p,) = verify(ds3)
    assert "file_ending" in p.what and Path(p.path).name == "dataset.json"
    (ds3 / "dataset.json").unlink()
    (p,) = verify(ds3)
    assert "no dataset.json" in p.what


def test_duplicate_label_values_and_unused_label(tmp_path: Path):
    root = make_dataset(tmp_path / "ds", labels={"background": 0, "nerve": 1, "vessel": 2})
    problems = verify(root)
    (unused,) = problems
    assert unused.severity == "warning" and "'vessel' (2)" in unused.what
    data = json.loads((root / "dataset.json").read_text())
    data["labels"]["artery"] = 1
    (root / "dataset.json").write_text(json.dumps(data))
    assert any("share the value 1" in p.what for p in errors(verify(root)))


# --------------------------------------------------------------------------------------------
# Grids


def _rewrite(path: Path, geometry: Geometry, array: np.ndarray | None = None) -> None:
    from autoseg.io import read_image

    arr = read_image(path).array if array is None else array
    write_image(path, arr, geometry)


@pytest.mark.parametrize(
    ("file_name", "change", "word"),
    [
        ("case1.nii.gz", "size", "size"),
        ("case1_0001.nii.gz", "spacing", "spacing"),
        ("case1.nii.gz", "origin", "origin"),
        ("case1.nii.gz", "direction", "direction"),
    ],
)
def test_grid_mismatch(ds3: Path, file_name: str, change: str, word: str):
    folder = "labelsTr" if file_name == "case1.nii.gz" else "imagesTr"
    path = ds3 / folder / file_name
    g = Geometry.default(SHAPE_3D, SPACING_3D)
    if change == "size":
        shape = (4, 12, 11)
        _rewrite(path, Geometry.default(shape, SPACING_3D), _mask(shape))
    elif change == "spacing":
        _rewrite(path, g.with_spacing((3.0, 0.6, 0.5)))
    elif change == "origin":
        _rewrite(path, Geometry(g.spacing, (0.0, 0.0, 2.0), g.direction, g.size))
    else:
        flipped = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        _rewrite(path, Geometry(g.spacing, g.origin, flipped, g.size))
    (p,) = verify(ds3)
    assert Path(p.path) == path
    assert p.what.startswith("grid does not match case1_0000.nii.gz") and word in p.what


def test_spacing_within_tolerance_is_accepted(ds3: Path):
    path = ds3 / "labelsTr" / "case0.nii.gz"
    _rewrite(path, Geometry.default(SHAPE_3D, (3.0 * (1 + 2e-4), 0.5, 0.5)))
    assert verify(ds3) == []


def test_mixed_2d_and_3d(ds3: Path):
    g2 = Geometry.default(SHAPE_2D, (0.5, 0.5))
    for c in range(2):
        write_image(ds3 / "imagesTr" / f"flat_{c:04d}.nii.gz", _image(SHAPE_2D, 7), g2)
    write_image(ds3 / "labelsTr" / "flat.nii.gz", _mask(SHAPE_2D), g2)
    data = json.loads((ds3 / "dataset.json").read_text())
    data["numTraining"] = 4
    (ds3 / "dataset.json").write_text(json.dumps(data))
    (p,) = verify(ds3)
    assert Path(p.path).name == "flat_0000.nii.gz"
    assert "is 2D" in p.what and "3 of 4 cases are 3D" in p.what


def test_mask_of_other_dimensionality_than_its_image(ds3: Path):
    write_image(ds3 / "labelsTr" / "case2.nii.gz", _mask(SHAPE_2D), Geometry.default(SHAPE_2D))
    (p,) = verify(ds3)
    assert Path(p.path).name == "case2.nii.gz" and "mask is 2D" in p.what and "3D" in p.what


# --------------------------------------------------------------------------------------------
# Masks


def test_undeclared_label_value(ds3: Path):
    m = _mask(SHAPE_3D)
    m[0, 0, :3] = 255
    _rewrite(ds3 / "labelsTr" / "case0.nii.gz", Geometry.default(SHAPE_3D, SPACING_3D), m)
    (p,) = verify(ds3)
    assert Path(p.path).name == "case0.nii.gz"
    assert "255 (3 voxels)" in p.what and "nerve=1" in p.what
    assert "--labels 255:1" in p.fix and "dataset.json" in p.fix


def test_image_saved_as_mask_is_recognised(ds3: Path):
    arr = (_image(SHAPE_3D, 3) * 10).astype(np.int16)
    _rewrite(ds3 / "labelsTr" / "case0.nii.gz", Geometry.default(SHAPE_3D, SPACING_3D), arr)
    (p,) = verify(ds3)
    assert "undeclared values" in p.what and "looks like an image" in p.fix
    assert "more" in p.what  # the long list is cut


def test_float_masks(ds3: Path):
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    _rewrite(ds3 / "labelsTr" / "case0.nii.gz", geom, _mask(SHAPE_3D, np.float32))
    assert verify(ds3) == []  # integral floats are fine
    blurred = _mask(SHAPE_3D, np.float32)
    blurred[:, 3, 2:6] = 0.5
    _rewrite(ds3 / "labelsTr" / "case0.nii.gz", geom, blurred)
    (p,) = verify(ds3)
    assert Path(p.path).name == "case0.nii.gz"
    assert "non-integral" in p.what and "0.5" in p.what and "16 " in p.what
    assert "nearest-neighbour" in p.fix


def test_mask_without_foreground_is_a_warning(ds3: Path):
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    _rewrite(ds3 / "labelsTr" / "case2.nii.gz", geom, np.zeros(SHAPE_3D, np.uint8))
    (p,) = verify(ds3)
    assert p.severity == "warning" and Path(p.path).name == "case2.nii.gz"
    assert "no foreground" in p.what
    assert str(p).startswith("warning: ")


# --------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image(ds3: Path, bad: float):
    arr = _image(SHAPE_3D, 0)
    arr[1, 2, 3:5] = bad
    _rewrite(ds3 / "imagesTr" / "case0_0001.nii.gz", Geometry.default(SHAPE_3D, SPACING_3D), arr)
    (p,) = verify(ds3)
    assert Path(p.path).name == "case0_0001.nii.gz"
    assert "2 non-finite voxels" in p.what
    assert ("2 NaN" in p.what) == np.isnan(bad)


def test_constant_image(ds3: Path):
    arr = np.full(SHAPE_3D, 7.0, np.float32)
    _rewrite(ds3 / "imagesTr" / "case2_0000.nii.gz", Geometry.default(SHAPE_3D, SPACING_3D), arr)
    (p,) = verify(ds3)
    assert Path(p.path).name == "case2_0000.nii.gz" and "blank" in p.what and "7" in p.what


def test_rgb_image(tmp_path: Path):
    root = make_dataset(tmp_path / "ds", dims=2, channels=1)
    rgb = np.stack([_image(SHAPE_2D, 1, np.uint8)] * 3, axis=-1)
    write_image(root / "imagesTr" / "case1_0000.png", rgb, Geometry.default(SHAPE_2D))
    (p,) = verify(root)
    assert Path(p.path).name == "case1_0000.png"
    assert "3 components" in p.what and "greyscale" in p.fix


def test_4d_image(ds3: Path):
    shape4 = (2, *SHAPE_3D)
    write_image(ds3 / "imagesTr" / "case0_0000.nii.gz", _image(shape4, 0), Geometry.default(shape4))
    problems = verify(ds3)
    (p,) = about(problems, "case0_0000.nii.gz")
    assert "is 4D" in p.what and "channel files" in p.fix


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_file(ds3: Path, keep: float):
    path = ds3 / "imagesTr" / "case1_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: max(int(len(data) * keep), 10)])
    problems = verify(ds3)
    (p,) = about(problems, "case1_0000.nii.gz")
    assert "truncated" in p.what or "cannot read" in p.what
    assert len(errors(problems)) == 1  # no follow-on grid or content errors from garbage data


def test_nifti_truncation_checks_headers(tmp_path: Path):
    arr = _image(SHAPE_3D, 0)
    geom = Geometry.default(SHAPE_3D)
    raw = write_image(tmp_path / "a.nii", arr, geom)
    gz = write_image(tmp_path / "a.nii.gz", arr, geom)
    assert nifti_truncation(raw) is None and nifti_truncation(gz) is None
    full = raw.read_bytes()
    (tmp_path / "cut.nii").write_bytes(full[:-100])
    n = len(full)  # complete file: header + voxels, nothing after
    assert n == 352 + arr.size * 4
    assert f"holds {n - 100:,} of the {n:,} bytes" in nifti_truncation(tmp_path / "cut.nii")
    # Truncated before compression: the gzip stream is complete but the data is short.
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(full[:-100]))
    assert f"{n - 100:,} of the {n:,}" in nifti_truncation(tmp_path / "short.nii.gz")
    # Several gzip members and trailing padding are valid gzip files, not truncations.
    (tmp_path / "multi.nii.gz").write_bytes(
        gzip.compress(full[:500]) + gzip.compress(full[500:]) + b"\0" * 16
    )
    assert nifti_truncation(tmp_path / "multi.nii.gz") is None
    assert nifti_truncation(tmp_path / "not_nifti.png") is None


# --------------------------------------------------------------------------------------------
# Whole runs


def _break_three_ways(root: Path) -> None:
    (root / "imagesTr" / "case0_0001.nii.gz").unlink()
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    arr = _image(SHAPE_3D, 1)
    arr[0, 0, 0] = np.nan
    write_image(root / "imagesTr" / "case1_0000.nii.gz", arr, geom)
    m = _mask(SHAPE_3D)
    m[0, 0, 0] = 4
    write_image(root / "labelsTr" / "case2.nii.gz", m, geom)


def test_every_problem_is_reported_and_workers_agree(ds3: Path):
    _break_three_ways(ds3)
    serial = verify(ds3, num_workers=1)
    assert sorted(Path(p.path).name for p in serial) == [
        "case0_0001.nii.gz",
        "case1_0000.nii.gz",
        "case2.nii.gz",
    ]
    assert verify(ds3, num_workers=2) == serial


def test_problem_str_and_severity():
    p = Problem("a/b.nii.gz", "mask holds 3.", "do x")
    assert str(p) == "a/b.nii.gz: mask holds 3. Fix: do x"
    assert str(Problem("f", "odd", "look", severity="warning")) == "warning: f: odd. Fix: look"
    with pytest.raises(ValueError):
        Problem("f", "odd", "look", severity="fatal")


def test_value_counts_matches_unique():
    rng = np.random.default_rng(0)
    for values in (
        rng.integers(-5, 5, 500),
        rng.integers(0, 3, 100).astype(np.uint8),
        np.array([-(2**40), 0, 0, 2**40]),
    ):
        uniq, counts = np.unique(values, return_counts=True)
        assert value_counts(values) == dict(zip(uniq.tolist(), counts.tolist()))


# --------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    make_dataset(tmp_path / "root" / "raw" / "012_Nerves")
    return tmp_path / "root" / "raw" / "012_Nerves"


@pytest.mark.parametrize("spec", ["12", "012_Nerves", "Dataset012_Nerves", "PATH"])
def test_cli_ok(data_root: Path, spec: str, capsys: pytest.CaptureFixture):
    spec = str(data_root) if spec == "PATH" else spec
    assert main(["verify", spec, "--workers", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "012_Nerves: 3 training cases, 0 test cases, 2 channels, labels background/nerve: OK"
    ]


def test_cli_errors_exit_1(data_root: Path, capsys: pytest.CaptureFixture):
    _break_three_ways(data_root)
    (data_root / "labelsTr" / "case1.nii.gz").write_bytes(b"")  # a mask emptied by accident
    assert main(["verify", "12", "--workers", "1"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    expected = verify(data_root)
    assert lines[:-1] == [str(p) for p in expected] and len(expected) == 4
    assert all(": " in line and ". Fix: " in line for line in lines[:-1])
    assert lines[-1].endswith(": 4 errors") and lines[-1].startswith("012_Nerves: 3 training")


def test_cli_warnings_only_exit_0(data_root: Path, capsys: pytest.CaptureFixture):
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    write_image(data_root / "labelsTr" / "case0.nii.gz", np.zeros(SHAPE_3D, np.uint8), geom)
    assert main(["verify", "12", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("warning: ") and lines[-1].endswith(": OK, 1 warning")


def test_cli_unknown_dataset_and_folder_without_json(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    assert main(["verify", "99"]) == 2
    assert "no dataset '99'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", str(empty)]) == 1
    out = capsys.readouterr().out
    assert "no dataset.json here" in out and "empty: dataset.json unreadable: 1 error" in out


def test_summary_line_counts_test_cases(ds3: Path):
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    for c in range(2):
        write_image(ds3 / "imagesTs" / f"t_{c:04d}.nii.gz", _image(SHAPE_3D, 3), geom)
    line = summary_line(ds3, verify(ds3))
    assert (
        line == "012_Nerves: 3 training cases, 1 test case, 2 channels, labels background/nerve: OK"
    )


# --------------------------------------------------------------------------------------------
# Real data (skipped when ../shared/data is absent)


@pytest.mark.skipif(not (DATA / "sct_testing").is_dir(), reason="shared data absent")
def test_real_spinal_cord_pairs(tmp_path: Path):
    root = tmp_path / "ds"
    pairs = {
        "t2s": ("t2s/t2s.nii.gz", "t2s/t2s_gmseg_manual.nii.gz"),
        "t2": ("t2/t2.nii.gz", "t2/t2_seg-manual.nii.gz"),
    }
    for case, (image, label) in pairs.items():
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "sct_testing" / image, root / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(DATA / "sct_testing" / label, root / "labelsTr" / f"{case}.nii.gz")
    DatasetJson({"0": "T2"}, {"background": 0, "cord": 1}, 2, ".nii.gz").save(root)
    assert verify(root) == []
    # The rootlet mask uses spinal levels 5, 6 and 7, which this dataset.json does not declare.
    rootlets = DATA / "sct_testing" / "t2" / "t2_seg-deepseg_rootlets-manual.nii.gz"
    shutil.copy(rootlets, root / "labelsTr" / "t2.nii.gz")
    (p,) = verify(root)
    assert Path(p.path).name == "t2.nii.gz"
    assert all(f"{v} (" in p.what for v in (5, 6, 7)) and "--labels 7:1" in p.fix


def test_empty_dataset_folder(tmp_path: Path):
    root = tmp_path / "ds"
    DatasetJson({"0": "T2"}, {"background": 0, "nerve": 1}, 0, ".nii.gz").save(root)
    problems = verify(root)
    assert sorted(Path(p.path).name for p in problems) == ["imagesTr", "labelsTr"]
    assert all("folder is missing" in p.what for p in problems)
    (root / "labelsTr").mkdir()
    (root / "imagesTr").mkdir()
    (p,) = verify(root)
    assert Path(p.path).name == "labelsTr" and "no training cases" in p.what


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([1.0, np.nan, 2.0, np.nan]), ["2 non-finite voxels (2 NaN, 0 Inf) of 4"]),
        (np.array([1.0, np.inf, -np.inf, 2.0]), ["2 non-finite voxels (0 NaN, 2 Inf)"]),
        (np.array([np.nan, np.nan]), ["2 non-finite"]),
        (np.array([5.0, np.nan, 5.0]), ["1 non-finite", "every finite voxel is 5"]),
        (np.zeros(6, np.int16), ["every voxel is 0"]),
        (np.arange(6, dtype=np.int16), []),
    ],
)
def test_content_problems(values: np.ndarray, expected: list[str]):
    found = content_problems(Path("x.nrrd"), values)
    assert len(found) == len(expected)
    for problem, text in zip(found, expected):
        assert text in problem.what


def test_content_problems_reports_nan_hidden_by_the_reader():
    (p,) = content_problems(Path("x.nii.gz"), np.arange(4.0), stored_non_finite=(3, 1))
    assert "4 non-finite voxels (3 NaN, 1 Inf)" in p.what and "reads them as 0" in p.what


def _crash_on_case1(case, labels):
    if case.case_id == "case1":
        os._exit(3)  # what a segfault in a reader looks like to the pool
    return verify_module.check_case.__wrapped__(case, labels)


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="needs fork workers")
def test_crashing_reader_process_becomes_a_problem(ds3: Path, monkeypatch: pytest.MonkeyPatch):
    _crash_on_case1.__wrapped__ = verify_module.check_case
    monkeypatch.setattr(verify_module, "check_case", _crash_on_case1)
    problems = verify(ds3, num_workers=2)
    crashed = [p for p in problems if "reader process crashed" in p.what]
    assert any("'case1'" in p.what and Path(p.path).name == "case1_0000.nii.gz" for p in crashed)
    assert "--workers 1" in crashed[0].fix


def test_mhd_data_files_are_not_flagged(tmp_path: Path):
    root = tmp_path / "ds"
    geom = Geometry.default(SHAPE_3D, SPACING_3D)
    for i in range(2):
        write_image(root / "imagesTr" / f"c{i}_0000.mhd", _image(SHAPE_3D, i), geom)
        write_image(root / "labelsTr" / f"c{i}.mhd", _mask(SHAPE_3D), geom)
    DatasetJson({"0": "T2"}, {"background": 0, "nerve": 1}, 2, ".mhd").save(root)
    assert len(list((root / "imagesTr").iterdir())) == 4  # headers and their data files
    assert verify(root) == []
