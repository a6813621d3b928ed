"""Pure helpers of benchmarks/bench_inference.py (no training, no CLI calls)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_inference as bi


def test_per_case_seconds_removes_start_up():
    # start-up 5 s, 2 s per case: 10 cases take 25 s, 1 case 7 s
    assert bi.per_case_seconds(25.0, 7.0, 10) == pytest.approx(2.0)
    assert bi.per_case_runs([25.0, 27.0], [7.0, 9.0], 10) == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError):
        bi.per_case_seconds(3.0, 3.0, 1)
    with pytest.raises(ValueError):
        bi.per_case_runs([1.0, 2.0], [1.0], 3)


def test_call_order_alternates():
    assert bi.call_order(0) == ("autoseg", "nnunet")
    assert bi.call_order(1) == ("nnunet", "autoseg")
    assert bi.call_order(2) == bi.call_order(0)


def test_pinned_and_thread_env():
    assert bi.pinned(["a", "b"], "1") == ["taskset", "-c", "1", "a", "b"]
    assert bi.pinned(["a"], "") == ["a"]
    env = bi.thread_env({"PATH": "/bin", "OMP_NUM_THREADS": "8"}, 2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["BENCH_TORCH_THREADS"] == "2"
    assert env["PATH"] == "/bin"


def test_autoseg_command():
    cmd = bi.autoseg_command(
        "py", Path("in"), Path("out"), "961_X", "3d_fullres", [0, 2], tta=False, device="cpu"
    )
    assert cmd[:4] == ["py", "-m", "autoseg", "predict"]
    text = " ".join(cmd)
    assert "-i in -o out -d 961_X --config 3d_fullres --folds 0,2" in text
    assert "--no-postprocessing" in cmd and "--no-tta" in cmd and "--device cpu" in text
    with_tta = bi.autoseg_command(
        "py", Path("in"), Path("out"), "961_X", "2d", [0], tta=True, device="cuda"
    )
    assert "--no-tta" not in with_tta


def test_nnunet_command():
    cmd = bi.nnunet_command(
        "py", Path("in"), Path("out"), "Dataset961_X", "2d", [0, 1], tta=False, device="cpu"
    )
    assert cmd[:3] == ["py", "-c", bi.NNUNET_SHIM]
    text = " ".join(cmd[3:])
    assert "-i in -o out -d Dataset961_X -c 2d -p autosegPlans -tr nnUNetTrainer -f 0 1" in text
    assert "-device cpu -npp 1 -nps 1" in text and cmd[-1] == "--disable_tta"
    with_tta = bi.nnunet_command(
        "py", Path("in"), Path("out"), "Dataset961_X", "2d", [0], tta=True, device="cpu"
    )
    assert "--disable_tta" not in with_tta


def test_nnunet_shim_compiles_and_holds_threads():
    compile(bi.NNUNET_SHIM, "<shim>", "exec")
    assert "BENCH_TORCH_THREADS" in bi.NNUNET_SHIM and "predict_entry_point" in bi.NNUNET_SHIM


def test_kind_and_labels():
    assert bi.kind_of_dim(3) == "mri3d" and bi.kind_of_dim(2) == "us2d"
    with pytest.raises(ValueError):
        bi.kind_of_dim(4)
    assert bi.foreground_labels({"background": 0, "vessel": 2, "nerve": 1}) == [1, 2]


def test_mean_dice():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    a[:2] = 1
    b[:1] = 1
    assert bi.mean_dice(a, a, [1]) == 1.0
    assert bi.mean_dice(a, b, [1]) == pytest.approx(2 * 4 / (8 + 4))
    # label 2 in neither counts 1.0
    assert bi.mean_dice(a, b, [1, 2]) == pytest.approx((2 * 4 / 12 + 1.0) / 2)


def test_case_dices_reads_files(tmp_path):
    from autoseg.io import Geometry, write_image

    geo = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), (4, 4))
    seg = np.zeros((4, 4), np.uint8)
    seg[1:3, 1:3] = 1
    for d in ("p", "r"):
        write_image(tmp_path / d / "c1.nii.gz", seg, geo)
    assert bi.case_dices(tmp_path / "p", tmp_path / "r", ["c1"], [1]) == [1.0]


def test_dice_note_tolerance():
    assert "equal within" in bi.dice_note(0.801, 0.799, 0.99)
    assert "NOT equal" in bi.dice_note(0.80, 0.79, 0.9)


def test_summarise_results():
    ours = bi.Measured([10.0, 11.0], [2.0, 2.0], [9.0, 9.0], [1.5, 1.5], [300.0, 310.0])
    theirs = bi.Measured([30.0, 30.0], [6.0, 6.0], [28.0, 28.0], [5.0, 5.0], [900.0, 900.0])
    dices = {"autoseg": [0.8, 0.9], "nnunet": [0.8, 0.9], "agreement": [1.0, 0.99]}
    res = {r.name: r for r in bi.summarise("3D MRI", True, 5, ours, theirs, dices)}
    pc = res["3D MRI TTA on: s/case"]
    assert pc.autoseg == pytest.approx(((10 - 2) / 4 + (11 - 2) / 4) / 2)
    assert pc.nnunet == pytest.approx(6.0)
    assert pc.target == 0.5 and pc.met is True and "within" in pc.note
    assert res["3D MRI TTA on: peak memory"].autoseg == pytest.approx(305.0)
    dice = res["3D MRI TTA on: Dice vs masks"]
    assert dice.better == "higher" and dice.target is None
    assert dice.autoseg == pytest.approx(0.85) and dice.ratio == pytest.approx(1.0)
    assert "+0.0000" in dice.note
    # without nnU-Net: medians None, no crash
    alone = bi.summarise("2D US", False, 3, ours, bi.Measured(), {"autoseg": [0.5]})
    assert all(r.nnunet is None for r in alone)


def test_parse_args():
    args = bi.parse_args(["--folds", "0,1", "--tta", "off", "--train-cases", "6"])
    assert args.folds == [0, 1] and args.tta_flags == [False]
    assert args.train_cases == {"mri3d": 6}
    with pytest.raises(SystemExit):
        bi.parse_args(["--cases", "1"])
    with pytest.raises(SystemExit):
        bi.parse_args(["--model-root", "x"])


def test_unmeasurable_per_case_gives_no_verdict():
    assert bi.measurable([1.0, 2.0], [0.5]) and bi.measurable([1.0], [])
    assert not bi.measurable([-0.1, 0.2, -0.3], [1.0])
    # the 3-case call faster than the 1-case call: negative per-case time, no "met"
    ours = bi.Measured([10.0], [11.0], [2.0], [1.0], [300.0])
    theirs = bi.Measured([30.0], [20.0], [9.0], [5.0], [900.0])
    pc = bi.summarise("2D US", False, 3, ours, theirs, None)[0]
    assert pc.autoseg < 0 and pc.target is None and pc.met is None
    assert bi.UNMEASURABLE in pc.note


def test_nnunet_shim_runs_nnunet_entry_point():
    import os
    import subprocess

    pytest.importorskip("nnunetv2")
    env = dict(os.environ, BENCH_TORCH_THREADS="1", nnUNet_raw="/x", nnUNet_results="/x")
    env["nnUNet_preprocessed"] = "/x"
    out = subprocess.run(
        [sys.executable, "-c", bi.NNUNET_SHIM, "-h"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "-npp" in out.stdout and "--disable_tta" in out.stdout


def test_bytecode_env():
    env = bi.bytecode_env({"PYTHONDONTWRITEBYTECODE": "1", "A": "b"}, Path("/w/pyc"))
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == "/w/pyc" and env["A"] == "b"


def test_validation_set_links_the_first_folds_unseen_cases(tmp_path):
    import json

    from conftest import tiny_us_dataset

    root = tmp_path / "root"
    raw = tiny_us_dataset(root, 77, 6)
    splits = [{"train": ["case0", "case1", "case2"], "val": ["case5", "case3", "case4"]}]
    (root / "results" / raw.name).mkdir(parents=True)
    (root / "results" / raw.name / "splits.json").write_text(json.dumps(splits * 5))
    model = bi.Model(bi.KINDS["us2d"], root, raw.name, "2d", [0], {})
    images, masks, one = bi.validation_set(model, 2, tmp_path / "work")
    assert sorted(p.name for p in images.iterdir()) == ["case3_0000.nii.gz", "case4_0000.nii.gz"]
    assert sorted(p.name for p in masks.iterdir()) == ["case3.nii.gz", "case4.nii.gz"]
    assert [p.name for p in one.iterdir()] == ["case3_0000.nii.gz"]
    assert (images / "case3_0000.nii.gz").resolve() == (raw / "imagesTr" / "case3_0000.nii.gz")
    assert bi.validation_set(model, 2, tmp_path / "work")[0] == images  # again: links kept
    with pytest.raises(SystemExit, match="< 2 validation cases"):
        bi.validation_set(model, 1, tmp_path / "work1")
    with pytest.raises(SystemExit):  # validation needs a trained dataset
        bi.parse_args(["--test-set", "validation"])
