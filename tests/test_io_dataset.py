"""dataset.json parsing, the case listing, and dataset resolution by id / name / path."""

from __future__ import annotations

import json

import pytest

from autoseg.errors import AutosegError
from autoseg.io.dataset import DatasetJson, list_cases, list_test_cases, load_dataset_json
from autoseg.paths import dataset_folder_name, parse_dataset_folder, resolve_dataset


def _ds(**kw) -> DatasetJson:
    base = dict(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        num_training=2,
        file_ending=".nii.gz",
    )
    base.update(kw)
    return DatasetJson(**base)


def test_round_trip_keeps_autoseg_and_unknown_keys(tmp_path):
    ds = _ds(name="Nerves", cases={"a": {"subject": "s1", "cohort": "patient"}})
    ds.extra["overwrite_image_reader_writer"] = "SimpleITKIO"
    ds.save(tmp_path)
    back = load_dataset_json(tmp_path)
    assert back == ds
    assert back.subject_of("a") == "s1" and back.cohort_of("a") == "patient"
    assert back.subject_of("b") == "b" and back.cohort_of("b") is None


def test_nnunet_only_output_has_only_nnunet_keys(tmp_path):
    ds = _ds(name="Nerves", cases={"a": {"subject": "s1"}})
    d = ds.to_dict(nnunet_only=True)
    assert set(d) == {"channel_names", "labels", "numTraining", "file_ending"}


def test_reads_an_nnunet_v2_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T2", "1": "ADC"},
                "labels": {"background": 0, "PZ": 1, "TZ": 2},
                "numTraining": 32,
                "file_ending": ".nii.gz",
                "license": "CC-BY-SA 4.0",
            }
        )
    )
    ds = load_dataset_json(tmp_path)
    assert ds.n_channels == 2 and ds.foreground_labels == {"PZ": 1, "TZ": 2}
    assert ds.licence == "CC-BY-SA 4.0"


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"labels": {"nerve": 1}}, "background"),
        ({"labels": {"background": 0, "r": [1, 2]}}, "region"),
        ({"file_ending": ".xyz"}, "file_ending"),
        ({"channel_names": {"1": "T2"}}, "channel_names"),
    ],
)
def test_bad_dataset_json_names_the_problem(tmp_path, patch, match):
    d = _ds().to_dict()
    d.update(patch)
    (tmp_path / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(AutosegError, match=match) as exc:
        load_dataset_json(tmp_path)
    assert "dataset.json" in str(exc.value)


def test_missing_keys_and_bad_json(tmp_path):
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0}}')
    with pytest.raises(AutosegError, match="lacks channel_names"):
        load_dataset_json(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(AutosegError, match="cannot parse"):
        load_dataset_json(tmp_path)
    with pytest.raises(AutosegError, match="no dataset.json"):
        load_dataset_json(tmp_path / "elsewhere")


def test_list_cases(tmp_path):
    ds = _ds(channel_names={"0": "T1", "1": "T2"})
    ds.save(tmp_path)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp_path / sub).mkdir()
    for cid in ("b", "a"):
        (tmp_path / "labelsTr" / f"{cid}.nii.gz").touch()
        for ch in (0, 1):
            (tmp_path / "imagesTr" / f"{cid}_{ch:04d}.nii.gz").touch()
    (tmp_path / "imagesTs" / "t1_0000.nii.gz").touch()
    (tmp_path / "imagesTs" / "t1_0001.nii.gz").touch()
    cases = list_cases(tmp_path)
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert cases[0].label.name == "a.nii.gz"
    test = list_test_cases(tmp_path)
    assert [c.case_id for c in test] == ["t1"] and test[0].label is None


def test_dataset_folder_names():
    assert dataset_folder_name(12, "Nerves") == "012_Nerves"
    assert parse_dataset_folder("012_Nerves") == (12, "Nerves")
    assert parse_dataset_folder("Dataset004_Hippocampus") == (4, "Hippocampus")
    assert parse_dataset_folder("Nerves") is None
    with pytest.raises(AutosegError):
        dataset_folder_name(1, "bad name!")


def test_resolve_dataset_by_id_name_and_path(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    for name in ("012_Nerves", "Dataset004_Hippo"):
        (raw / name).mkdir(parents=True)
        _ds().save(raw / name)
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path))
    assert resolve_dataset("12") == raw / "012_Nerves"
    assert resolve_dataset(12) == raw / "012_Nerves"
    assert resolve_dataset("012_Nerves") == raw / "012_Nerves"
    assert resolve_dataset("4") == raw / "Dataset004_Hippo"
    assert resolve_dataset("004_Hippo") == raw / "Dataset004_Hippo"
    assert resolve_dataset("Nerves") == raw / "012_Nerves"
    assert resolve_dataset(str(raw / "012_Nerves")) == raw / "012_Nerves"
    with pytest.raises(AutosegError, match="012_Nerves"):
        resolve_dataset("99")  # the error lists the datasets that do exist
