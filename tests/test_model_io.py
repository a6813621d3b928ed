from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from autoseg.cli import export_model as export_cli
from autoseg.errors import AutosegError
from autoseg.inference.model_io import (
    MANIFEST,
    MODEL_FORMAT,
    export_model,
    import_model,
    read_manifest,
    unsafe_member_name,
)
from autoseg.io import DatasetJson, load_dataset_json
from autoseg.networks.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from autoseg.paths import resolve_dataset

NAME = "901_SciaticMRI"
PLAN = Path(__file__).resolve().parents[1] / "plans" / "sciatic_mri_256x256x40.plans.json"
CONFIGS = ("2d", "3d_fullres", "crop")
FOLDS = (0, 1)


def make_trained(root: Path, inference: bool = True) -> Path:
    """A dataset with a plan, two trained folds of three configurations and inference.json."""
    raw = root / "raw" / NAME
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        num_training=2,
        file_ending=".nii.gz",
        cases={"c0": {"subject": "patient-17", "cohort": "patients"}},
    ).save(raw)
    pre = root / "preprocessed" / NAME
    pre.mkdir(parents=True)
    shutil.copyfile(PLAN, pre / "plans.json")
    res = root / "results" / NAME
    torch.manual_seed(0)
    for c in CONFIGS:
        for f in FOLDS:
            net = torch.nn.Conv3d(1, 2, 3)
            save_checkpoint(
                res / c / f"fold_{f}" / "checkpoint_final.pt",
                {"model": net.state_dict(), "arch": "{}", "config": c, "fold": f, "epoch": 5},
            )
            (res / c / f"fold_{f}" / "training_log.json").write_text("[]")
    if inference:
        info = {
            "configurations": ["3d_fullres"],
            "folds": list(FOLDS),
            "ensemble": False,
            "postprocessing": {"1": {"rule": "largest"}},
            "tta_scales": [1.0, 1.1, 1.2],
            "chosen": "3d_fullres",
        }
        (res / "inference.json").write_text(json.dumps(info))
    return res


@pytest.fixture
def exported(tmp_path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    make_trained(src)
    out = export_model(NAME, tmp_path / "model.zip", src)
    return src, out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rewrite(
    src: Path,
    dst: Path,
    *,
    replace: dict[str, bytes] | None = None,
    add: dict[str, bytes] | None = None,
    list_added: bool = False,
    update_hashes: bool = True,
) -> Path:
    """Copy a model zip with some members replaced/added, optionally fixing the manifest."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members.pop(MANIFEST))
    members.update(replace)
    members.update(add)
    if list_added:
        manifest["files"] += [
            {"path": n, "sha256": _sha(b), "size": len(b)} for n, b in add.items()
        ]
    if update_hashes:
        for entry in manifest["files"]:
            if entry["path"] in members:
                entry["sha256"] = _sha(members[entry["path"]])
                entry["size"] = len(members[entry["path"]])
    with zipfile.ZipFile(dst, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
        zf.writestr(MANIFEST, json.dumps(manifest))
    return dst


# --------------------------------------------------------------------------------------------


def test_export_contents(exported):
    src, out = exported
    manifest = read_manifest(out)
    assert manifest["format"] == MODEL_FORMAT
    assert manifest["dataset"] == NAME
    assert manifest["configurations"] == ["3d_fullres"] and manifest["folds"] == [0, 1]
    assert manifest["torch_version"] == torch.__version__
    assert manifest["autoseg_version"] and manifest["created_at"]
    paths = sorted(f["path"] for f in manifest["files"])
    assert paths == [
        "3d_fullres/fold_0/checkpoint_final.pt",
        "3d_fullres/fold_1/checkpoint_final.pt",
        "dataset.json",
        "inference.json",
        "plans.json",
    ]
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted([*paths, MANIFEST])
        for entry in manifest["files"]:
            assert _sha(zf.read(entry["path"])) == entry["sha256"]
        ds = json.loads(zf.read("dataset.json"))
    assert "cases" not in ds  # subject ids stay home
    assert ds["labels"] == {"background": 0, "nerve": 1}


def test_round_trip(exported, tmp_path):
    src, out = exported
    dst = tmp_path / "dst"
    res = import_model(out, dst)
    assert res == dst / "results" / NAME
    for rel in ("3d_fullres/fold_0/checkpoint_final.pt", "3d_fullres/fold_1/checkpoint_final.pt"):
        assert (res / rel).read_bytes() == (src / "results" / NAME / rel).read_bytes()
        state = load_checkpoint(res / rel)
        assert state["config"] == "3d_fullres"
    plans = (dst / "preprocessed" / NAME / "plans.json").read_bytes()
    assert plans == (src / "preprocessed" / NAME / "plans.json").read_bytes()
    assert json.loads((res / "inference.json").read_text()) == json.loads(
        (src / "results" / NAME / "inference.json").read_text()
    )
    assert resolve_dataset(NAME, dst) == dst / "raw" / NAME
    ds = load_dataset_json(dst / "raw" / NAME)
    assert ds.labels == {"background": 0, "nerve": 1} and ds.cases == {}
    assert not (res / "2d").exists()  # only what was exported
    assert not [p for p in dst.iterdir() if p.name.startswith(".partial")]  # staging removed


def test_crop_brings_its_localiser_and_inference_is_adjusted(tmp_path):
    src = tmp_path / "src"
    make_trained(src)
    out = export_model(NAME, tmp_path / "m.zip", src, configs=["crop"], folds="1")
    manifest = read_manifest(out)
    assert manifest["configurations"] == ["crop", "2d"]
    assert manifest["folds"] == [1]
    with zipfile.ZipFile(out) as zf:
        info = json.loads(zf.read("inference.json"))
    assert info["configurations"] == ["crop"] and info["folds"] == [1]
    assert info["postprocessing"] == {}  # decided for 3d_fullres, not for crop
    assert info["tta_scales"] == [1.0]  # the scale views too
    res = import_model(out, tmp_path / "dst")
    assert (res / "2d" / "fold_1" / "checkpoint_final.pt").is_file()


def test_scale_views_travel_and_bad_ones_are_refused(exported, tmp_path):
    _, out = exported
    with zipfile.ZipFile(out) as zf:
        info = json.loads(zf.read("inference.json"))
    assert info["tta_scales"] == [1.0, 1.1, 1.2]  # same models: the decision travels
    for bad_scales in ([1.1, 1.2], "1.1", [1.0, 0]):
        doc = json.dumps({**info, "tta_scales": bad_scales}).encode()
        bad = rewrite(out, tmp_path / "bad.zip", replace={"inference.json": doc})
        with pytest.raises(AutosegError, match="tta_scales"):
            import_model(bad, tmp_path / "dst")


def test_export_without_inference_json(tmp_path):
    src = tmp_path / "src"
    make_trained(src, inference=False)
    with pytest.raises(AutosegError, match="find-best"):
        export_model(NAME, tmp_path / "m.zip", src)
    out = export_model(NAME, tmp_path / "m.zip", src, configs="2d,3d_fullres")
    with zipfile.ZipFile(out) as zf:
        info = json.loads(zf.read("inference.json"))
    assert info["configurations"] == ["2d", "3d_fullres"] and info["ensemble"] is True
    assert info["folds"] == [0, 1]
    with pytest.raises(AutosegError, match="not in the plan"):
        export_model(NAME, tmp_path / "m.zip", src, configs=["3d_lowres"])
    os.remove(src / "results" / NAME / "2d" / "fold_1" / "checkpoint_final.pt")
    with pytest.raises(AutosegError, match="no final checkpoint"):
        export_model(NAME, tmp_path / "m.zip", src, configs=["2d"], folds=[0, 1])


def test_tampered_checkpoint_is_refused(exported, tmp_path):
    _, out = exported
    name = "3d_fullres/fold_0/checkpoint_final.pt"
    with zipfile.ZipFile(out) as zf:
        data = bytearray(zf.read(name))
    data[len(data) // 2] ^= 0xFF
    bad = rewrite(out, tmp_path / "bad.zip", replace={name: bytes(data)}, update_hashes=False)
    dst = tmp_path / "dst"
    with pytest.raises(AutosegError, match="sha256"):
        import_model(bad, dst)
    assert not (dst / "results").exists() and not (dst / "raw").exists()


@pytest.mark.parametrize("evil", ["../evil", "/tmp/autoseg-evil-abs", "a/../../evil"])
def test_path_traversal_is_refused(exported, tmp_path, evil):
    _, out = exported
    dst = tmp_path / "deep" / "dst"
    for listed in (False, True):
        bad = rewrite(out, tmp_path / "bad.zip", add={evil: b"owned"}, list_added=listed)
        with pytest.raises(AutosegError, match="unsafe"):
            import_model(bad, dst)
    assert not (tmp_path / "deep" / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/autoseg-evil-abs").exists()
    assert not dst.exists() or not any(dst.iterdir())


def test_unexpected_files_are_refused(exported, tmp_path):
    _, out = exported
    for listed in (False, True):
        bad = rewrite(out, tmp_path / "x.zip", add={"notes.txt": b"hi"}, list_added=listed)
        with pytest.raises(AutosegError, match="unexpected"):
            import_model(bad, tmp_path / "dst")
    # a checkpoint of a fold the manifest does not name
    bad = rewrite(
        out,
        tmp_path / "y.zip",
        add={"3d_fullres/fold_4/checkpoint_final.pt": b"x"},
        list_added=True,
    )
    with pytest.raises(AutosegError, match="manifest"):
        import_model(bad, tmp_path / "dst")
    # a listed file missing from the zip
    with zipfile.ZipFile(out) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "plans.json"}
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(AutosegError, match="missing"):
        import_model(tmp_path / "z.zip", tmp_path / "dst")
    (tmp_path / "plain.zip").write_bytes(b"PK not really")
    with pytest.raises(AutosegError, match="zip"):
        import_model(tmp_path / "plain.zip", tmp_path / "dst")


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_checkpoint_is_refused_and_nothing_runs(exported, tmp_path):
    _, out = exported
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "model": _Evil(f"touch {marker}"), "config": "3d_fullres"}, buf)
    payload = buf.getvalue()
    with zipfile.ZipFile(io.BytesIO(payload)) as inner:  # the payload really is armed
        assert any(b"system" in inner.read(n) for n in inner.namelist() if n.endswith(".pkl"))
    name = "3d_fullres/fold_1/checkpoint_final.pt"
    bad = rewrite(out, tmp_path / "evil.zip", replace={name: payload})  # hashes made to match
    # the manifest agrees with the payload, so only the weights-only load can stop it
    manifest = read_manifest(bad)
    assert {e["path"]: e["sha256"] for e in manifest["files"]}[name] == _sha(payload)
    dst = tmp_path / "dst"
    with pytest.raises(AutosegError, match="could run code") as err:
        import_model(bad, dst)
    assert "fold_1" in str(err.value)
    assert not marker.exists()
    assert not (dst / "results").exists()
    assert not [p for p in dst.iterdir() if p.name.startswith(".partial")]


def test_existing_dataset_needs_overwrite(exported, tmp_path):
    src, out = exported
    with pytest.raises(AutosegError, match="already exists"):
        import_model(out, src)
    # a local dataset.json that agrees is kept (it holds the subject map the export drops)
    res = import_model(out, src, overwrite=True)
    assert load_dataset_json(src / "raw" / NAME).cases == {
        "c0": {"subject": "patient-17", "cohort": "patients"}
    }
    assert (res / "3d_fullres" / "fold_0" / "checkpoint_final.pt").is_file()
    # another dataset with the same id would make "-d 901" ambiguous
    other = tmp_path / "other"
    DatasetJson({"0": "T2"}, {"background": 0, "x": 1}, 1, ".nii.gz").save(
        other / "raw" / "901_Other"
    )
    with pytest.raises(AutosegError, match="901_Other"):
        import_model(out, other, overwrite=True)


def test_unsafe_member_name():
    assert unsafe_member_name("plans.json") is None
    assert unsafe_member_name("2.5d/fold_0/checkpoint_final.pt") is None
    for bad in ("../x", "/abs", "a/../b", "a//b", "C:/x", "a\\b", "./a", ""):
        assert unsafe_member_name(bad), bad


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoseg")
    export_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_export_then_import(tmp_path, capsys):
    src = tmp_path / "src"
    make_trained(src)
    zip_path = tmp_path / "cli.zip"
    args = _parser().parse_args(
        ["export-model", NAME, "-o", str(zip_path), "--root", str(src), "--folds", "0"]
    )
    assert args.func(args) == 0
    assert "3d_fullres" in capsys.readouterr().out
    args = _parser().parse_args(["import-model", str(zip_path), "--root", str(tmp_path / "d")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"autoseg predict -d {NAME}" in out
    info = json.loads((tmp_path / "d" / "results" / NAME / "inference.json").read_text())
    assert info["folds"] == [0]


def test_folder_entries_from_rezipping_are_accepted(exported, tmp_path):
    _, out = exported
    with zipfile.ZipFile(out) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    rezipped = tmp_path / "rezipped.zip"
    with zipfile.ZipFile(rezipped, "w") as zf:
        zf.writestr("3d_fullres/", b"")
        zf.writestr("3d_fullres/fold_0/", b"")
        for n, b in members.items():
            zf.writestr(n, b)
    res = import_model(rezipped, tmp_path / "dst")
    assert (res / "3d_fullres" / "fold_0" / "checkpoint_final.pt").is_file()
    with zipfile.ZipFile(rezipped, "a") as zf:
        zf.writestr("elsewhere/", b"")
    with pytest.raises(AutosegError, match="unexpected folder"):
        import_model(rezipped, tmp_path / "dst2")
