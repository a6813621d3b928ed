from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli import find_best as find_best_cli
from autoseg.errors import AutosegError
from autoseg.evaluation.find_best import (
    K_LARGEST_MIN_SHARE,
    TIE_DICE,
    choose_candidate,
    decide_postprocessing,
    enumerate_candidates,
    find_best,
    fold_thresholds,
    k_largest_applicable,
    segment,
)
from autoseg.io import DatasetJson, Geometry, write_image

SHAPE = (6, 16, 16)
SPACING = (3.0, 0.5, 0.5)  # z, y, x -> 0.75 mm³ voxels
CASES = ("c0", "c1", "c2", "c3")
NAME = "005_Toy"

NERVE = (slice(1, 5), slice(3, 7), slice(3, 7))  # 64 voxels
NERVE_SHIFTED = (slice(1, 5), slice(3, 7), slice(5, 9))  # half overlap -> Dice 0.5
VESSEL = (slice(1, 5), slice(10, 13), slice(10, 13))
VESSEL_2 = (slice(1, 5), slice(10, 13), slice(0, 2))  # second vessel, case c3 only
BLOBS = {8: (slice(4, 6), slice(13, 15), slice(5, 7)), 1: (slice(5, 6), slice(14, 15), slice(6, 7))}

BG = (0.9, 0.05, 0.05)
P_NERVE = (0.05, 0.9, 0.05)
P_VESSEL = (0.05, 0.05, 0.9)


def _mask(*boxes) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    for b in boxes:
        m[b] = True
    return m


def _reference(case: str) -> np.ndarray:
    ref = np.zeros(SHAPE, np.uint8)
    ref[NERVE] = 1
    ref[VESSEL] = 2
    if case == "c3":
        ref[VESSEL_2] = 2
    return ref


def _probabilities(case: str, good: bool, blob: int | None) -> np.ndarray:
    """The good model is sure of the truth; the bad one puts the nerve 2 voxels off, unsure.
    Both see a spurious nerve blob. Averaging the two recovers the truth exactly."""
    ref = _reference(case)
    p = np.empty((3, *SHAPE), np.float32)
    p[:] = np.array(BG, np.float32)[:, None, None, None]
    p[:, ref == 2] = np.array(P_VESSEL, np.float32)[:, None]
    if good:
        p[:, ref == 1] = np.array(P_NERVE, np.float32)[:, None]
    else:
        p[:, _mask(NERVE) & ~_mask(NERVE_SHIFTED)] = np.array((0.6, 0.4, 0.0))[:, None]
        p[:, _mask(NERVE_SHIFTED)] = np.array((0.4, 0.6, 0.0))[:, None]
    if blob is not None:
        p[(slice(None), *BLOBS[blob])] = np.array(P_NERVE, np.float32)[:, None, None, None]
    return p


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def make_tree(root: Path, blob: int | None = 8, extra_config: bool = False) -> Path:
    """raw dataset + results with configs A (good on fold 0) and B (good on fold 1)."""
    raw = root / "raw" / NAME
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1, "vessel": 2},
        num_training=len(CASES),
        file_ending=".nii.gz",
    ).save(raw)
    geometry = Geometry.default(SHAPE, SPACING)
    for case in CASES:
        write_image(raw / "labelsTr" / f"{case}.nii.gz", _reference(case), geometry)
    res = root / "results" / NAME
    splits = [
        {"train": ["c2", "c3"], "val": ["c0", "c1"]},
        {"train": ["c0", "c1"], "val": ["c2", "c3"]},
    ]
    res.mkdir(parents=True)
    (res / "splits.json").write_text(json.dumps(splits))
    for config, good_fold in (("A", 0), ("B", 1)):
        for fold, split in enumerate(splits):
            vdir = res / config / f"fold_{fold}" / "validation"
            vdir.mkdir(parents=True)
            for case in split["val"]:
                p = _probabilities(case, good=fold == good_fold, blob=blob)
                np.savez_compressed(vdir / f"{case}.npz", probabilities=p.astype(np.float16))
    if extra_config:  # only fold 0 trained: not a candidate
        vdir = res / "C" / "fold_0" / "validation"
        vdir.mkdir(parents=True)
        for case in splits[0]["val"]:
            p = _probabilities(case, good=True, blob=None)
            np.savez_compressed(vdir / f"{case}.npz", probabilities=p.astype(np.float16))
    return res


# --------------------------------------------------------------------------------------------
# Pure helpers


def test_enumerate_candidates():
    assert enumerate_candidates(["a", "b", "c"]) == [
        ("a",),
        ("b",),
        ("c",),
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    assert enumerate_candidates(["a"]) == [("a",)]


def test_segment_averages_then_argmax():
    a = np.array([[0.6, 0.2], [0.4, 0.8]], np.float16)  # (K=2, 2 voxels)
    b = np.array([[0.1, 0.5], [0.9, 0.5]], np.float16)
    assert segment([a]).tolist() == [0, 1]
    assert segment([b]).tolist() == [1, 0]  # tie 0.5/0.5 -> background
    assert segment([a, b]).tolist() == [1, 1]
    assert segment([a, b]).dtype == np.uint8


def _cand(name, dice, hd, n=1):
    return {"name": name, "configs": name.split("+"), "mean_dice": dice, "mean_hd95": hd}


def test_choose_candidate_by_dice_then_hd95():
    a = _cand("a", 0.80, 5.0)
    b = _cand("b", 0.85, 9.0)
    assert choose_candidate([a, b])["name"] == "b"
    # within the tie margin the lower HD95 wins
    c = _cand("c", 0.85 - TIE_DICE / 2, 3.0)
    assert choose_candidate([a, b, c])["name"] == "c"
    # just outside it Dice decides
    d = _cand("d", 0.85 - TIE_DICE * 1.5, 1.0)
    assert choose_candidate([a, b, d])["name"] == "b"
    # full tie: the single configuration beats the ensemble
    e = _cand("a+b", 0.85, 9.0)
    assert choose_candidate([e, b])["name"] == "b"


def test_k_largest_applicable():
    assert not k_largest_applicable([1, 1, 1, 1, 1])
    assert k_largest_applicable([2, 1, 1, 1, 1])  # 20 %
    assert not k_largest_applicable([2, 1, 1, 1, 1, 1])  # 17 %
    assert k_largest_applicable([2, 0, 0, 0, 1])  # cases without the label do not count
    assert not k_largest_applicable([0, 0])
    assert K_LARGEST_MIN_SHARE == 0.2


def test_decide_postprocessing():
    base = {1: 0.80, 2: 0.70}
    trials = {
        1: {
            "largest": {1: 0.85, 2: 0.70},
            "min_size": {1: 0.85 - 5e-5, 2: 0.70},  # equal gain -> the gentler rule
            "k_largest": {1: 0.82, 2: 0.70},
        },
        2: {"largest": {1: 0.80, 2: 0.70 + 5e-5}},  # below epsilon
    }
    assert decide_postprocessing(base, trials) == {1: "min_size", 2: "none"}
    trials[1]["largest"] = {1: 0.90, 2: 0.70}
    assert decide_postprocessing(base, trials)[1] == "largest"
    # a rule that lowers another label is never kept
    trials[1] = {"largest": {1: 0.90, 2: 0.69}}
    assert decide_postprocessing(base, trials)[1] == "none"
    # a rule that lowers its own label is not kept
    trials[1] = {"largest": {1: 0.70, 2: 0.70}}
    assert decide_postprocessing(base, trials)[1] == "none"


def test_fold_thresholds_use_training_cases_only():
    vols = {"a": 100.0, "b": 10.0, "c": None, "d": 50.0}
    th = fold_thresholds(vols, {0: ["a", "c"], 1: ["b", "d"], 2: ["c"]}, fraction=0.1)
    assert th[0] == pytest.approx(10.0)
    assert th[1] == pytest.approx(1.0)
    assert th[2] is None


# --------------------------------------------------------------------------------------------
# End to end on a tiny results tree


def _expected_cv(blob: int) -> tuple[float, float, float]:
    """Mean foreground Dice of A alone, of the ensemble, computed independently."""
    blob_mask = _mask(BLOBS[blob])
    a, ens = [], []
    for case in CASES:
        ref = _reference(case)
        good = case in ("c0", "c1")
        nerve_a = (_mask(NERVE) if good else _mask(NERVE_SHIFTED)) | blob_mask
        nerve_ens = _mask(NERVE) | blob_mask
        d_vessel = 1.0
        a.append((_dice(nerve_a, ref == 1) + d_vessel) / 2)
        ens.append((_dice(nerve_ens, ref == 1) + d_vessel) / 2)
    return float(np.mean(a)), float(np.mean(ens)), 1.0


def test_find_best_picks_ensemble_and_largest_component(tmp_path):
    root = tmp_path / "root"
    res = make_tree(root, blob=8, extra_config=True)
    info = find_best(NAME, root, progress=False, num_workers=1)
    expect_a, expect_ens, expect_post = _expected_cv(8)

    names = [c["name"] for c in info["candidates"]]
    assert sorted(names) == ["A", "A+B", "B"]
    by_name = {c["name"]: c for c in info["candidates"]}
    assert by_name["A"]["mean_dice"] == pytest.approx(expect_a, abs=1e-6)
    assert by_name["B"]["mean_dice"] == pytest.approx(expect_a, abs=1e-6)  # symmetric
    assert by_name["A+B"]["mean_dice"] == pytest.approx(expect_ens, abs=1e-6)
    assert by_name["A+B"]["per_label_dice"]["2"] == pytest.approx(1.0)
    assert by_name["A+B"]["mean_hd95"] <= by_name["A"]["mean_hd95"]
    assert info["chosen"] == "A+B"
    assert info["configurations"] == ["A", "B"] and info["ensemble"] is True
    assert info["folds"] == [0, 1]
    assert info["cv_dice"] == pytest.approx(expect_ens, abs=1e-6)

    # nerve: the spurious 8-voxel blob goes with largest-component; 8 voxels (6 mm³) is above
    # the min-size threshold (10 % of 64 voxels * 0.75 mm³ = 4.8 mm³), so min-size cannot help
    assert info["postprocessing"]["1"] == {"rule": "largest"}
    trials = info["postprocessing_trials"]["1"]
    assert trials["min_size"] == pytest.approx(trials["none"])
    assert "k_largest" not in trials  # one nerve component in every training label
    # vessel: c3 has two vessels (25 % of cases) -> k-largest tried; largest would hurt
    assert info["postprocessing"]["2"] == {"rule": "none"}
    assert (
        info["postprocessing_trials"]["2"]["largest"] < info["postprocessing_trials"]["2"]["none"]
    )
    assert "k_largest" in info["postprocessing_trials"]["2"]
    assert info["selection"]["k_largest_tried"] == {"1": False, "2": True}
    assert info["cv_dice_postprocessed"] == pytest.approx(expect_post)

    assert "C" in info["skipped_configurations"]
    on_disk = json.loads((res / "inference.json").read_text())
    assert on_disk == info
    assert on_disk["created_by"].startswith("autoseg ")


def test_tiny_blob_prefers_min_size(tmp_path):
    root = tmp_path / "root"
    make_tree(root, blob=1)
    info = find_best(NAME, root, progress=False, num_workers=1)
    assert info["chosen"] == "A+B"
    rule = info["postprocessing"]["1"]
    # both rules remove the 1-voxel blob equally; the gentler min-size rule is kept, with the
    # threshold learned from all training labels: 10 % of 64 voxels * 0.75 mm³
    assert rule["rule"] == "min_size"
    assert rule["min_volume_mm3"] == pytest.approx(4.8)
    assert rule["min_voxels"] == 7
    assert info["cv_dice_postprocessed"] == pytest.approx(1.0)


def test_no_blob_no_postprocessing_and_workers_agree(tmp_path):
    root = tmp_path / "root"
    make_tree(root, blob=None)
    one = find_best(NAME, root, progress=False, num_workers=1, write=False)
    two = find_best(NAME, root, progress=False, num_workers=2, write=False)
    assert one["postprocessing"] == {"1": {"rule": "none"}, "2": {"rule": "none"}}
    assert one["cv_dice"] == pytest.approx(1.0)
    assert one["cv_dice_postprocessed"] == one["cv_dice"]
    for key in ("candidates", "postprocessing", "postprocessing_trials", "chosen"):
        assert one[key] == two[key]


def test_single_config_and_fold_selection(tmp_path):
    root = tmp_path / "root"
    make_tree(root, blob=8, extra_config=True)
    info = find_best(NAME, root, configs=["A"], progress=False, num_workers=1, write=False)
    assert [c["name"] for c in info["candidates"]] == ["A"]
    assert info["ensemble"] is False
    # fold 0 only: C is complete there and perfect apart from no blob
    info = find_best(NAME, root, folds="0", progress=False, num_workers=1, write=False)
    assert info["folds"] == [0] and info["n_cases"] == 2
    assert info["chosen"] == "C"
    # the min-size threshold still learns from fold 0's training cases c2, c3 (not scored)
    assert "min_size" in info["postprocessing_trials"]["1"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoseg")
    find_best_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_prints_aligned_table(tmp_path, capsys):
    root = tmp_path / "root"
    res = make_tree(root, blob=8)
    args = _parser().parse_args(
        ["find-best", NAME, "--root", str(root), "--quiet", "--workers", "1", "--folds", "0,1"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "candidate" in line)
    table = lines[header : header + 4]
    assert "nerve" in table[0] and "vessel" in table[0] and "mean Dice" in table[0]
    chosen = [line for line in table if line.startswith("*")]
    assert len(chosen) == 1 and "A+B" in chosen[0]
    # right-aligned numeric columns end at the same character
    end = table[0].index("mean Dice") + len("mean Dice")
    for row in table[1:]:
        assert row[end - 1].isdigit() and row[end] == " "
    assert "keep the largest component" in out
    assert str(res / "inference.json") in out
    assert (res / "inference.json").is_file()


def test_errors(tmp_path):
    root = tmp_path / "root"
    res = make_tree(root, blob=8, extra_config=True)
    with pytest.raises(AutosegError, match="incomplete"):
        find_best(NAME, root, configs=["A", "C"], progress=False, num_workers=1)
    with pytest.raises(AutosegError, match="fold 7"):
        find_best(NAME, root, folds=[0, 7], progress=False, num_workers=1)
    with pytest.raises(AutosegError, match="not fold numbers"):
        find_best(NAME, root, folds="x", progress=False, num_workers=1)
    # probabilities on the wrong grid
    bad = res / "B" / "fold_1" / "validation" / "c2.npz"
    np.savez_compressed(bad, probabilities=np.zeros((3, 2, 2, 2), np.float16))
    with pytest.raises(AutosegError, match="shape"):
        find_best(NAME, root, progress=False, num_workers=1)
    bad.write_bytes(b"not a zip")
    with pytest.raises(AutosegError, match="cannot read"):
        find_best(NAME, root, progress=False, num_workers=1)
    # a validated case without a reference label
    (root / "raw" / NAME / "labelsTr" / "c0.nii.gz").unlink()
    with pytest.raises(AutosegError, match="no reference"):
        find_best(NAME, root, configs="A", progress=False, num_workers=1)
    empty = tmp_path / "empty"
    make_tree(empty, blob=None)
    import shutil

    shutil.rmtree(empty / "results" / NAME / "A")
    shutil.rmtree(empty / "results" / NAME / "B")
    with pytest.raises(AutosegError, match="no configuration"):
        find_best(NAME, empty, progress=False, num_workers=1)
