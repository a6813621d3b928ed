"""Export to nnU-Net v2's raw layout, and the round trip back through ``convert``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.io import Geometry, list_cases, list_test_cases, load_dataset_json, read_image
from autoseg.io.atomic import TMP_MARK
from autoseg.io.convert import convert_folder
from autoseg.io.nnunet import export_nnunet

NNUNET_KEYS = {"channel_names", "labels", "numTraining", "file_ending"}


def _dataset(tmp_path: Path, n: int = 3) -> Path:
    """A converted two-channel 3D dataset with one test case, subjects and a licence."""
    from autoseg.io import write_image

    src = tmp_path / "src"
    geo = Geometry((0.5, 0.5, 3.0), (1.0, 2.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (7, 6, 4))
    rng = np.random.default_rng(0)
    lines = ["case,subject,cohort"]
    for i in range(n):
        for c in range(2):
            write_image(src / "imagesTr" / f"p{i}_{c:04d}.nii.gz", rng.normal(size=(4, 6, 7)), geo)
        write_image(src / "labelsTr" / f"p{i}.nii.gz", rng.integers(0, 3, (4, 6, 7)), geo)
        lines.append(f"p{i},s{i // 2},patient")
    for c in range(2):
        write_image(src / "imagesTs" / f"q_{c:04d}.nii.gz", rng.normal(size=(4, 6, 7)), geo)
    (src / "cases.csv").write_text("\n".join(lines) + "\n")
    result = convert_folder(
        src,
        "Nerves",
        12,
        root=tmp_path / "root",
        channel_names=["T1", "T2"],
        label_names=["nerve", "vessel"],
        num_workers=1,
        progress=False,
    )
    assert result.ok, [str(p) for p in result.problems]
    return result.target


def test_export_layout_links_and_nnunet_only_json(tmp_path):
    dataset = _dataset(tmp_path)
    out = export_nnunet(dataset, tmp_path / "nnUNet_raw", progress=False)
    assert out == tmp_path / "nnUNet_raw" / "Dataset012_Nerves"
    meta = json.loads((out / "dataset.json").read_text())
    assert set(meta) == NNUNET_KEYS
    assert meta["channel_names"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == {"background": 0, "nerve": 1, "vessel": 2}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert names == sorted(
        [f"imagesTr/p{i}_{c:04d}.nii.gz" for i in range(3) for c in range(2)]
        + [f"labelsTr/p{i}.nii.gz" for i in range(3)]
        + ["imagesTs/q_0000.nii.gz", "imagesTs/q_0001.nii.gz"]
    )
    for rel in names:
        assert (out / rel).read_bytes() == (dataset / rel).read_bytes()
    assert (out / "labelsTr/p0.nii.gz").stat().st_ino == (
        dataset / "labelsTr/p0.nii.gz"
    ).stat().st_ino
    assert not list(out.parent.glob(f"{TMP_MARK}*"))


def test_export_refuses_existing_unless_overwrite_and_can_copy(tmp_path):
    dataset = _dataset(tmp_path, n=1)
    out = export_nnunet(dataset, tmp_path / "nn", progress=False)
    with pytest.raises(AutosegError, match="already exists"):
        export_nnunet(dataset, tmp_path / "nn", progress=False)
    (out / "stale.txt").write_text("old")
    again = export_nnunet(dataset, tmp_path / "nn", overwrite=True, link=False, progress=False)
    assert again == out and not (out / "stale.txt").exists()
    label = out / "labelsTr" / "p0.nii.gz"
    assert label.stat().st_ino != (dataset / "labelsTr" / "p0.nii.gz").stat().st_ino


def test_export_refuses_non_consecutive_labels_and_bad_names(tmp_path):
    dataset = _dataset(tmp_path, n=1)
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "nerve": 1, "vessel": 5}
    (dataset / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(AutosegError, match="consecutive") as exc:
        export_nnunet(dataset, tmp_path / "nn", progress=False)
    assert "--labels 5:2" in str(exc.value)
    meta["labels"]["vessel"] = 2
    (dataset / "dataset.json").write_text(json.dumps(meta))
    renamed = dataset.rename(dataset.with_name("Nerves"))
    with pytest.raises(AutosegError, match="NNN"):
        export_nnunet(renamed, tmp_path / "nn", progress=False)


def test_round_trip_through_nnunet_keeps_everything_but_metadata(tmp_path):
    dataset = _dataset(tmp_path)
    out = export_nnunet(dataset, tmp_path / "nn", progress=False)
    back = convert_folder(out, "Back", root=tmp_path / "root", num_workers=1, progress=False)
    assert back.ok and back.target.name == "001_Back"
    a, b = load_dataset_json(dataset), load_dataset_json(back.target)
    assert (a.channel_names, a.labels, a.num_training) == (
        b.channel_names,
        b.labels,
        b.num_training,
    )
    assert b.cases == {}  # nnU-Net's dataset.json has no per-case metadata
    for ca, cb in zip(list_cases(dataset, a), list_cases(back.target, b)):
        for fa, fb in zip((*ca.images, ca.label), (*cb.images, cb.label)):
            ia, ib = read_image(fa), read_image(fb)
            np.testing.assert_array_equal(ia.array, ib.array)
            assert ia.geometry == ib.geometry
    assert [c.case_id for c in list_test_cases(back.target, b)] == ["q"]


def test_cli_exports_existing_dataset_by_id(tmp_path, capsys, monkeypatch):
    _dataset(tmp_path, n=1)
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    code = main(["convert", "12", "--to", "nnunet", "--out", str(tmp_path / "nn")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "nn" / "Dataset012_Nerves" / "dataset.json").is_file()
    code = main(["convert", "12", "--to", "nnunet", "--out", str(tmp_path / "nn")])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "Traceback" not in err
    code = main(["convert", "Nerves", "--to", "nnunet", "--out", str(tmp_path / "nn2")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "nn2" / "Dataset012_Nerves" / "labelsTr" / "p0.nii.gz").is_file()


def test_cli_converts_then_exports(tmp_path, capsys, monkeypatch):
    dataset = _dataset(tmp_path, n=1)
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "other_root"))
    args = ["convert", str(dataset), "--name", "Again", "--workers", "1"]
    code = main([*args, "--to", "nnunet", "--out", str(tmp_path / "nn")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "nn" / "Dataset001_Again" / "imagesTr" / "p0_0001.nii.gz").is_file()


def test_nnunet_verify_dataset_integrity_accepts_export(tmp_path):
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    out = export_nnunet(_dataset(tmp_path), tmp_path / "nn", progress=False)
    verify.verify_dataset_integrity(str(out), num_processes=1)
