"""Dataset fingerprint: hand-checkable statistics, aggregation, freshness, CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.fingerprint import (
    Fingerprint,
    aggregate,
    bounding_box,
    case_statistics,
    extract_fingerprint,
    fingerprint_path,
    load_fingerprint,
    modality_of,
    run_fingerprint,
)
from autoseg.fingerprint.extract import intensity_stats
from autoseg.io import DatasetJson, Geometry, write_image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _load_bench():
    """benchmarks/bench_fingerprint.py (it holds the synthetic tube dataset)."""
    from benchmarks import bench_fingerprint

    return bench_fingerprint


def write_dataset(
    folder: Path,
    cases: dict[str, tuple[list[np.ndarray], np.ndarray]],
    spacing: tuple[float, ...],
    *,
    channel_names: dict[str, str] | None = None,
    labels: dict[str, int] | None = None,
    ending: str = ".nii.gz",
) -> Path:
    """Raw dataset folder: ``cases`` maps case id -> (channel arrays, label array)."""
    for cid, (channels, label) in cases.items():
        sp = spacing if ending != ".png" else None
        for c, arr in enumerate(channels):
            geom = Geometry.default(arr.shape, sp)
            write_image(folder / "imagesTr" / f"{cid}_{c:04d}{ending}", arr, geom)
        write_image(
            folder / "labelsTr" / f"{cid}{ending}", label, Geometry.default(label.shape, sp)
        )
    DatasetJson(
        channel_names=channel_names or {"0": "T2"},
        labels=labels or {"background": 0, "nerve": 1},
        num_training=len(cases),
        file_ending=ending,
    ).save(folder)
    return folder


# --- a 3D case whose numbers can be checked by hand -----------------------------------------
SPACING = (2.0, 0.5, 0.25)  # z, y, x
SHAPE = (10, 20, 30)


def box_case() -> tuple[np.ndarray, np.ndarray]:
    """Image 100 with zero bands (y < 3, x >= 27); label 1 = two boxes, label 2 = one voxel.

    Label 1: A = z 2:5, y 5:9, x 10:20 (120 voxels, intensity 200) and
             B = z 7:9, y 12:14, x 22:24 (8 voxels, intensity 300), apart -> 2 components.
    Label 2: the voxel (9, 19, 0), intensity 400.
    """
    image = np.full(SHAPE, 100, np.int16)
    image[:, :3] = 0
    image[:, :, 27:] = 0
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 5:9, 10:20] = 1
    image[2:5, 5:9, 10:20] = 200
    label[7:9, 12:14, 22:24] = 1
    image[7:9, 12:14, 22:24] = 300
    label[9, 19, 0] = 2
    image[9, 19, 0] = 400
    return image, label


LABELS3 = {"background": 0, "nerve": 1, "vessel": 2, "fascicle": 3}


def test_bounding_box_projection_matches_nonzero():
    rng = np.random.default_rng(0)
    for shape in [(7,), (6, 9), (5, 8, 11)]:
        mask = rng.random(shape) > 0.97
        mask.flat[3] = True
        nz = np.nonzero(mask)
        expected = [(int(i.min()), int(i.max()) + 1) for i in nz]
        assert bounding_box(mask) == expected
        assert bounding_box(np.zeros(shape, bool)) is None


def test_box_case_statistics_are_the_hand_computed_numbers():
    image, label = box_case()
    entry, samples = case_statistics([image], label, SPACING, [1, 2, 3], case_id="box")
    assert entry["case_id"] == "box"
    assert entry["spacing"] == [2.0, 0.5, 0.25]
    assert entry["shape"] == [10, 20, 30]
    assert entry["crop_bbox"] == [[0, 10], [3, 20], [0, 27]]
    assert entry["shape_after_crop"] == [10, 17, 27]
    assert entry["class_voxel_fraction"] == pytest.approx(
        {"1": 128 / 6000, "2": 1 / 6000, "3": 0.0}
    )
    # label 1 spans z 2..9 (7 slices x 2 mm), y 5..14 (9 x 0.5), x 10..24 (14 x 0.25)
    assert entry["foreground_extent_mm"] == {
        "1": [14.0, 4.5, 3.5],
        "2": [2.0, 0.5, 0.25],
        "3": None,
    }
    # any foreground: z 2..10, y 5..20, x 0..24
    assert entry["foreground_extent_all_mm"] == [16.0, 7.5, 6.0]
    assert entry["n_components"] == {"1": 2, "2": 1, "3": 0}
    st = entry["intensity"]["0"]
    assert st["mean"] == pytest.approx((120 * 200 + 8 * 300 + 400) / 129)
    values = np.array([200] * 120 + [300] * 8 + [400], float)
    assert st["std"] == pytest.approx(values.std())
    assert st["min"] == 200 and st["max"] == 400
    # 0.5th percentile of 129 sorted values falls inside the 200s, 99.5th between 300 and 400
    assert st["p00_5"] == 200.0
    assert 300 < st["p99_5"] < 400
    assert len(samples) == 1 and sorted(samples[0]) == sorted(values)


def test_components_use_full_connectivity():
    vol = np.zeros((4, 4, 4), np.uint8)
    vol[0, 0, 0] = vol[1, 1, 1] = 1  # touch at a corner only: one component with 26-connectivity
    vol[3, 3, 3] = 1  # apart
    img = np.ones_like(vol)
    entry, _ = case_statistics([img], vol, (1, 1, 1), [1])
    assert entry["n_components"] == {"1": 2}
    flat = np.zeros((5, 5), np.uint8)
    flat[0, 0] = flat[1, 1] = flat[4, 4] = 1
    entry, _ = case_statistics([np.ones_like(flat)], flat, (1, 1), [1])
    assert entry["n_components"] == {"1": 2}


def test_sampling_caps_voxels_per_case_and_is_seeded():
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    label = np.ones((10, 10, 10), np.uint8)
    _, s1 = case_statistics([image, image * 2], label, (1, 1, 1), [1], max_samples=50)
    _, s2 = case_statistics([image, image * 2], label, (1, 1, 1), [1], max_samples=50)
    assert s1[0].shape == (50,) and len(set(s1[0].tolist())) == 50  # without replacement
    np.testing.assert_array_equal(s1[0], s2[0])
    np.testing.assert_array_equal(s1[1], 2 * s1[0])  # the same voxels in every channel


def test_unknown_label_value_is_a_clear_error():
    image, label = box_case()
    label[0, 5, 5] = 7
    with pytest.raises(AutosegError, match=r"\[7\]"):
        case_statistics([image], label, SPACING, [1, 2])


def test_dataset_fingerprint_3d(tmp_path):
    image, label = box_case()
    image2 = image.copy()
    label2 = np.zeros_like(label)
    label2[4:6, 10:12, 5:7] = 1  # 8 voxels, intensity 100
    ds = write_dataset(
        tmp_path / "raw" / "007_Box",
        {"a": ([image], label), "b": ([image2], label2)},
        SPACING,
        labels=LABELS3,
    )
    fp = extract_fingerprint(ds, num_workers=1, progress=False)
    assert fp["schema_version"] == 1 and fp["dataset"] == "007_Box"
    assert fp["dim"] == 3 and fp["n_cases"] == 2
    assert fp["modality"] == {"0": "mri"} and fp["labels"] == LABELS3
    assert [c["case_id"] for c in fp["cases"]] == ["a", "b"]
    agg = fp["aggregate"]
    assert agg["spacing_median"] == [2.0, 0.5, 0.25]
    assert agg["anisotropy_ratio"] == 8.0
    assert agg["shape_after_crop_max"] == [10, 17, 27]
    assert agg["class_voxel_fraction_mean"]["1"] == pytest.approx((128 + 8) / 2 / 6000)
    assert agg["class_voxel_fraction_mean"]["2"] == pytest.approx(0.5 / 6000)
    # vessel is only in case a: its extent statistics come from that case alone
    assert agg["foreground_extent_mm"]["2"] == {
        "median": [2.0, 0.5, 0.25],
        "p95": [2.0, 0.5, 0.25],
        "max": [2.0, 0.5, 0.25],
    }
    assert agg["foreground_extent_mm"]["1"]["max"] == [14.0, 4.5, 3.5]
    assert agg["foreground_extent_mm"]["1"]["median"] == [
        pytest.approx((14 + 4) / 2),
        pytest.approx((4.5 + 1) / 2),
        pytest.approx((3.5 + 0.5) / 2),
    ]
    assert agg["foreground_extent_mm"]["3"] is None and agg["n_components"]["3"] is None
    assert agg["n_components"]["1"] == {"median": 1.5, "max": 2}
    assert agg["cases_without_foreground"] == 0
    pooled = np.array([200] * 120 + [300] * 8 + [400] + [100] * 8, float)
    st = agg["intensity"]["0"]
    assert st["mean"] == pytest.approx(pooled.mean())
    assert st["median"] == 200.0
    assert st["min"] == 100.0 and st["max"] == 400.0


def test_aggregate_spacing_shapes_and_anisotropy():
    img = np.ones((4, 6, 8), np.int16)
    lab = np.zeros((4, 6, 8), np.uint8)
    lab[1, 1, 1] = 1
    entries, samples = [], []
    for spacing in [(3.0, 0.5, 0.5), (4.0, 0.7, 0.7), (5.0, 0.6, 0.6)]:
        e, s = case_statistics([img], lab, spacing, [1])
        entries.append(e)
        samples.append(s)
    agg = aggregate(entries, samples, [1], 1)
    assert agg["spacing_median"] == [4.0, 0.6, 0.6]
    assert agg["spacing_min"] == [3.0, 0.5, 0.5]
    assert agg["spacing_max"] == [5.0, 0.7, 0.7]
    assert agg["anisotropy_ratio"] == pytest.approx(4.0 / 0.6)
    assert agg["shape_median"] == [4.0, 6.0, 8.0]


def test_2d_dataset_keeps_array_order(tmp_path):
    image = np.full((40, 50), 80, np.uint8)
    image[:, :4] = 0  # a black band on the left
    label = np.zeros((40, 50), np.uint8)
    label[10:20, 30:35] = 1
    ds = write_dataset(
        tmp_path / "001_US", {"f0": ([image], label)}, (0.2, 0.1), channel_names={"0": "B-mode"}
    )
    fp = extract_fingerprint(ds, num_workers=1, progress=False)
    case = fp["cases"][0]
    assert fp["dim"] == 2 and fp["modality"] == {"0": "ultrasound"}
    assert case["spacing"] == [0.2, 0.1]
    assert case["crop_bbox"] == [[0, 40], [4, 50]]
    assert case["foreground_extent_mm"]["1"] == [pytest.approx(2.0), pytest.approx(0.5)]
    assert case["class_voxel_fraction"]["1"] == pytest.approx(50 / 2000)


def test_png_dataset_has_unit_spacing(tmp_path):
    image = np.full((30, 20), 50, np.uint8)
    label = np.zeros((30, 20), np.uint8)
    label[5:8, 5:9] = 1
    ds = write_dataset(
        tmp_path / "002_Png",
        {"p": ([image], label)},
        (1.0, 1.0),
        ending=".png",
        channel_names={"0": "ultrasound"},
    )
    fp = extract_fingerprint(ds, num_workers=1, progress=False)
    assert fp["dim"] == 2 and fp["cases"][0]["spacing"] == [1.0, 1.0]
    assert fp["cases"][0]["foreground_extent_mm"]["1"] == [3.0, 4.0]


def test_multichannel_crop_is_union_and_stats_per_channel(tmp_path):
    shape = (6, 12, 12)
    t1 = np.zeros(shape, np.float32)
    flair = np.zeros(shape, np.float32)
    t1[:, 2:8, 3:9] = 10.0
    flair[:, 5:11, 4:10] = 20.0
    label = np.zeros(shape, np.uint8)
    label[2:4, 5:8, 4:9] = 1  # inside both: t1 = 10, flair = 20
    ds = write_dataset(
        tmp_path / "003_MC",
        {"m": ([t1, flair], label)},
        (1.0, 1.0, 1.0),
        channel_names={"0": "T1", "1": "FLAIR"},
    )
    fp = extract_fingerprint(ds, num_workers=1, progress=False)
    case = fp["cases"][0]
    assert case["crop_bbox"] == [[0, 6], [2, 11], [3, 10]]
    assert case["intensity"]["0"]["mean"] == 10.0 and case["intensity"]["1"]["mean"] == 20.0
    assert set(fp["aggregate"]["intensity"]) == {"0", "1"}
    assert fp["modality"] == {"0": "mri", "1": "mri"}


def test_case_without_foreground(tmp_path):
    image, label = box_case()
    ds = write_dataset(
        tmp_path / "raw" / "004_Empty",
        {"a": ([image], label), "z": ([image], np.zeros_like(label))},
        SPACING,
        labels=LABELS3,
    )
    out = run_fingerprint(ds, tmp_path, num_workers=1, progress=False)
    fp = load_fingerprint(out)  # written as strict JSON: no NaN anywhere
    empty = fp.case("z")
    assert not empty.has_foreground and fp.case("a").has_foreground
    assert empty.foreground_extent_all_mm is None
    assert empty.n_components == {"1": 0, "2": 0, "3": 0}
    assert empty.intensity["0"].mean is None
    assert fp.aggregate.cases_without_foreground == 1
    assert fp.aggregate.class_voxel_fraction_median["1"] == pytest.approx(128 / 6000 / 2)
    assert fp.aggregate.foreground_extent_mm["1"].median == (14.0, 4.5, 3.5)


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("CT", "ct"), ("ceCT", "ct"), ("CT1", "ct"), ("Computed Tomography", "ct"),
        ("T2", "mri"), ("t1w", "mri"), ("T2star", "mri"), ("FLAIR", "mri"), ("DWI_b800", "mri"),
        ("PD-FS", "mri"), ("STIR", "mri"), ("Dixon water", "mri"), ("MRI", "mri"),
        ("T2 spin echo", "mri"), ("Flair_subtrMeanDivStd", "mri"), ("mt1", "mri"),
        ("US", "ultrasound"), ("ultrasound", "ultrasound"), ("echo", "ultrasound"),
        ("B-mode", "ultrasound"), ("bmode", "ultrasound"), ("Doppler", "ultrasound"),
        ("noNorm", "other"), ("photo", "other"), ("rgb", "other"), ("", "other"),
        ("structure", "other"),
    ],
)  # fmt: skip
def test_modality_rules(name, modality):
    assert modality_of(name) == modality


def test_parallel_equals_serial_and_json_round_trip(tmp_path):
    bench = _load_bench()
    ds = bench.make_tube_dataset(
        tmp_path / "raw" / "005_Tube", n_cases=4, shape=(6, 40, 40), pad=2, radius_mm=4.0
    )
    serial = extract_fingerprint(ds, num_workers=1, progress=False, max_samples=30)
    parallel = extract_fingerprint(ds, num_workers=2, progress=False, max_samples=30)
    assert serial == parallel
    assert serial["aggregate"]["n_components"]["1"]["max"] >= 1
    out = run_fingerprint(ds, tmp_path, num_workers=2, progress=False)
    data = json.loads(out.read_text())
    fp = load_fingerprint(out)
    assert isinstance(fp, Fingerprint)
    assert fp.to_dict() == data
    assert Fingerprint.from_dict(fp.to_dict()) == fp
    assert fp.aggregate.spacing_median == (3.0, 0.75, 0.75)


def test_schema_mismatch_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(AutosegError, match="autoseg fingerprint"):
        load_fingerprint(tmp_path / "nothing.json")
    (tmp_path / "old.json").write_text('{"schema_version": 0}')
    with pytest.raises(AutosegError, match="schema version"):
        load_fingerprint(tmp_path / "old.json")
    (tmp_path / "cut.json").write_text('{"schema_version": 1, "dataset": "x"}')
    with pytest.raises(AutosegError, match="incomplete"):
        load_fingerprint(tmp_path / "cut.json")


def test_skip_if_fresh_and_overwrite(tmp_path, monkeypatch):
    image, label = box_case()
    ds = write_dataset(
        tmp_path / "raw" / "006_Fresh", {"a": ([image], label)}, SPACING, labels=LABELS3
    )
    out = run_fingerprint("6", tmp_path, num_workers=1, progress=False)
    assert (
        out
        == fingerprint_path(ds, tmp_path)
        == tmp_path / "preprocessed" / "006_Fresh" / ("fingerprint.json")
    )
    old = out.stat().st_mtime - 100
    os.utime(ds / "dataset.json", (old - 10, old - 10))
    os.utime(out, (old, old))

    calls = []
    import autoseg.fingerprint.extract as extract_mod

    real = extract_mod.extract_fingerprint

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(extract_mod, "extract_fingerprint", counting)
    run_fingerprint("006_Fresh", tmp_path, num_workers=1, progress=False)
    assert calls == [] and out.stat().st_mtime == old  # fresh: untouched

    run_fingerprint(ds, tmp_path, overwrite=True, num_workers=1, progress=False)
    assert len(calls) == 1

    os.utime(out, (old, old))
    os.utime(ds / "dataset.json", None)  # dataset.json edited after the fingerprint
    run_fingerprint(ds, tmp_path, num_workers=1, progress=False)
    assert len(calls) == 2

    write_dataset(ds, {"a": ([image], label), "b": ([image], label)}, SPACING, labels=LABELS3)
    os.utime(ds / "dataset.json", (old - 10, old - 10))  # a new case, dataset.json older
    run_fingerprint(ds, tmp_path, num_workers=1, progress=False)
    assert len(calls) == 3 and load_fingerprint(out).n_cases == 2

    # written before the coarsening statistic existed: recomputed, since the planner needs it
    data = json.loads(out.read_text())
    del data["aggregate"]["coarsening_dice"]
    out.write_text(json.dumps(data))
    os.utime(ds / "dataset.json", (old - 10, old - 10))
    assert load_fingerprint(out).aggregate.coarsening_dice is None  # still readable
    run_fingerprint(ds, tmp_path, num_workers=1, progress=False)
    assert len(calls) == 4 and load_fingerprint(out).aggregate.coarsening_dice is not None


def test_bad_inputs_are_autoseg_errors(tmp_path):
    image, label = box_case()
    ds = write_dataset(tmp_path / "010_Bad", {"a": ([image], label)}, SPACING)  # no label 2
    with pytest.raises(AutosegError, match="does not declare"):
        extract_fingerprint(ds, num_workers=1, progress=False)
    ds2 = write_dataset(
        tmp_path / "011_Shape", {"a": ([image[:5]], label)}, SPACING, labels=LABELS3
    )
    with pytest.raises(AutosegError, match="differs"):
        extract_fingerprint(ds2, num_workers=1, progress=False)
    ds3 = write_dataset(
        tmp_path / "012_Float", {"a": ([image], label + 0.5)}, SPACING, labels=LABELS3
    )
    with pytest.raises(AutosegError, match="non-integer"):
        extract_fingerprint(ds3, num_workers=1, progress=False)
    empty = write_dataset(tmp_path / "013_None", {}, SPACING)
    with pytest.raises(AutosegError, match="no training cases"):
        extract_fingerprint(empty, num_workers=1, progress=False)


def test_error_in_worker_reaches_caller(tmp_path):
    image, label = box_case()
    ds = write_dataset(
        tmp_path / "014_W", {"a": ([image], label), "b": ([image], label)}, SPACING, labels=LABELS3
    )
    (ds / "imagesTr" / "b_0000.nii.gz").write_bytes(b"not an image")
    with pytest.raises(AutosegError, match="cannot read image"):
        extract_fingerprint(ds, num_workers=2, progress=False)


def test_float_label_file_with_whole_numbers_is_accepted(tmp_path):
    image, label = box_case()
    ds = write_dataset(
        tmp_path / "015_F", {"a": ([image], label.astype(np.float32))}, SPACING, labels=LABELS3
    )
    fp = extract_fingerprint(ds, num_workers=1, progress=False)
    assert fp["cases"][0]["n_components"] == {"1": 2, "2": 1, "3": 0}


def test_cli_summary_skip_and_overwrite(tmp_path, capsys):
    image, label = box_case()
    write_dataset(tmp_path / "raw" / "008_Cli", {"a": ([image], label)}, SPACING, labels=LABELS3)
    root = str(tmp_path)
    assert main(["fingerprint", "8", "--root", root, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "008_Cli: 3D, 1 cases, 1 channel" in out
    assert "median 2 x 0.5 x 0.25 mm (z, y, x)" in out
    assert "anisotropy  8" in out
    assert f"{100 * 128 / 6000:.3g} %" in out and "'nerve'" in out
    assert "extent median 14 x 4.5 x 3.5 mm" in out
    assert "label 3 'fascicle': in 0/1 cases" in out
    assert "channel 0 'T2': mri" in out and "[200, 400]" in out
    path = tmp_path / "preprocessed" / "008_Cli" / "fingerprint.json"
    assert f"fingerprint written: {path}" in out
    assert main(["fingerprint", "008_Cli", "--root", root]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["fingerprint", "8", "--root", root, "--overwrite", "--workers", "1"]) == 0
    assert "fingerprint written" in capsys.readouterr().out
    assert main(["fingerprint", "99", "--root", root]) == 2
    assert "no dataset '99'" in capsys.readouterr().err


def test_benchmark_runs_with_a_stub_nnunet(tmp_path, capsys):
    """The benchmark's nnU-Net path: export layout, environment, command line, ratio."""
    bench = _load_bench()
    stub = tmp_path / "nnUNetv2_extract_fingerprint"
    stub.write_text(
        "#!/bin/sh\n"
        'test -f "$nnUNet_raw/Dataset900_BenchTube/dataset.json" || exit 3\n'
        'test -e "$nnUNet_raw/Dataset900_BenchTube/labelsTr/tube_001.nii.gz" || exit 4\n'
        'test "$1 $2 $3 $4 $5" = "-d 900 -np 2 --clean" || exit 5\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    args = ["--dataset", "synthetic", "--cases", "2", "--shape", "4", "24", "24", "--repeats"]
    args += ["1", "--cores", "64"]
    args += ["--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "fp.json")]
    args += ["--nnunet-bin", str(stub)]
    assert bench.main(args) == 0
    assert json.loads((tmp_path / "fp.json").read_text())["benchmark"] == "fingerprint"
    out = capsys.readouterr().out
    assert "autoseg (API)" in out and "autoseg (CLI)" in out and "nnU-Net (CLI)" in out
    assert "speed-up nnU-Net / autoseg (CLI):" in out
    assert bench.main([*args[:-1], str(tmp_path / "absent")]) == 0
    assert "nnU-Net: absent" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED_DATA / "sct_testing").is_dir(), reason="shared data absent")
def test_sct_testing_spacing_in_array_order(tmp_path):
    src = SHARED_DATA / "sct_testing" / "t2s"
    ds = tmp_path / "raw" / "020_SCT"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for cid, img, lab in [
        ("t2s", "t2s.nii.gz", "t2s_gmseg_manual.nii.gz"),
        ("t2s_uncropped", "t2s_uncropped.nii.gz", "t2s_uncropped_gmseg_manual.nii.gz"),
    ]:
        shutil.copy(src / img, ds / "imagesTr" / f"{cid}_0000.nii.gz")
        shutil.copy(src / lab, ds / "labelsTr" / f"{cid}.nii.gz")
    DatasetJson({"0": "T2star"}, {"background": 0, "grey matter": 1}, 2, ".nii.gz").save(ds)
    fp = extract_fingerprint(ds, num_workers=2, progress=False)
    assert fp["dim"] == 3 and fp["modality"] == {"0": "mri"}
    for case in fp["cases"]:
        assert case["spacing"] == pytest.approx([7.5, 0.5, 0.5], rel=1e-5)
    assert fp["cases"][0]["shape"] == [9, 54, 49]  # ITK size 49 x 54 x 9
    assert fp["aggregate"]["anisotropy_ratio"] == pytest.approx(15.0, rel=1e-5)
    assert fp["aggregate"]["n_components"]["1"]["max"] >= 1
    assert 0 < fp["aggregate"]["class_voxel_fraction_mean"]["1"] < 0.1


def test_huge_undeclared_label_value_is_reported_not_allocated():
    image = np.ones((3, 4, 5), np.int16)
    label = np.zeros((3, 4, 5), np.uint32)
    label[1, 1, 1] = 4_000_000_000
    label[1, 2, 2] = 1
    with pytest.raises(AutosegError, match=r"\[4000000000\]"):
        case_statistics([image], label, (1, 1, 1), [1])
    label[1, 1, 1] = 0
    entry, _ = case_statistics([image], label.astype(np.uint64), (1, 1, 1), [1])
    assert entry["class_voxel_fraction"]["1"] == pytest.approx(1 / 60)


def test_cli_rejects_zero_workers(tmp_path, capsys):
    image, label = box_case()
    write_dataset(tmp_path / "raw" / "009_W", {"a": ([image], label)}, SPACING, labels=LABELS3)
    assert main(["fingerprint", "9", "--root", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_coarsening_dice_follows_how_many_voxels_the_structure_spans():
    from autoseg.fingerprint.extract import coarsening_dice

    wide = coarsening_dice(_disc((200, 200), (100, 97), 40), [1.0, 1.0])
    thin = coarsening_dice(_disc((200, 200), (100, 97), 4), [1.0, 1.0])
    assert list(wide) == ["1.5", "2", "3", "4", "6", "8"]
    assert wide["2"] > 0.99 and wide["8"] > 0.9  # 80 voxels across: survives 8x
    assert thin["2"] > 0.8 and thin.get("6", 0.0) < wide["6"] - 0.2  # 8 across: does not
    for d in (wide, thin):
        values = list(d.values())
        assert all(b <= a + 0.02 for a, b in zip(values, values[1:]))  # coarser never helps
    assert coarsening_dice(np.zeros((20, 20), bool), [1.0, 1.0]) == {}


def test_coarsening_dice_stops_below_half_and_keeps_the_thick_axis():
    from autoseg.fingerprint.extract import coarsening_dice

    line = np.zeros((60, 60), bool)
    line[30, 5:55] = True  # one voxel thick: gone at the first coarser grid that halves it
    d = coarsening_dice(line, [1.0, 1.0])
    assert len(d) < 6 and min(d.values()) < 0.5
    # 3D stack at 1 x 1 x 4 mm (z, y, x = 4, 1, 1): z is never resampled, so a mask that only
    # changes from slice to slice keeps Dice 1 however coarse the in-plane grid
    stack = np.zeros((6, 40, 40), bool)
    stack[2:4] = True
    assert set(coarsening_dice(stack, [4.0, 1.0, 1.0]).values()) == {1.0}
    # the same mask with z as fine as the rest loses its 2-slice slab
    assert min(coarsening_dice(stack, [1.0, 1.0, 1.0]).values()) < 0.9


def test_aggregate_coarsening_counts_stopped_factors_as_zero():
    cases = []
    for case_id, per in (("a", {"2": 0.99, "3": 0.9}), ("b", {"2": 0.4})):
        cases.append(
            {
                "case_id": case_id,
                "spacing": [1.0, 1.0],
                "shape": [10, 10],
                "shape_after_crop": [10, 10],
                "class_voxel_fraction": {"1": 0.1},
                "foreground_extent_mm": {"1": [3.0, 3.0]},
                "foreground_extent_all_mm": [3.0, 3.0],
                "n_components": {"1": 1},
                "intensity": {"0": intensity_stats(np.ones(3))},
                "coarsening_dice": {"1": per},
            }
        )
    agg = aggregate(cases, [[np.ones(3)], [np.ones(3)]], [1], 1)
    assert agg["coarsening_dice"]["1"]["2"]["mean"] == pytest.approx(0.695)
    assert agg["coarsening_dice"]["1"]["3"]["mean"] == pytest.approx(0.45)  # b stopped: 0
