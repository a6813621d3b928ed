"""The whole product on tiny phantoms, through the public API and the CLI.

phantom -> convert -> plan (edited by hand to a tiny network, as a user may) -> plan-and-train
(2 folds) -> find-best -> predict (outputs on the input's exact grid) -> evaluate ->
export-model / import-model -> predict again with the imported model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli import main
from autoseg.io import read_image
from autoseg.io.image import split_extension

TINY_2D = {
    "features_per_stage": [4, 8, 8],
    "kernel_sizes": [[3, 3], [3, 3], [3, 3]],
    "strides": [[1, 1], [2, 2], [2, 2]],
    "n_blocks_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
}


def shrink_plan(plan_path: Path, configs: list[str], patch: list[int]) -> None:
    """What a user does by editing plans.json: a tiny network and a short schedule."""
    plan = json.loads(plan_path.read_text())
    plan["configurations"] = {k: v for k, v in plan["configurations"].items() if k in configs}
    for cfg in plan["configurations"].values():
        cfg["architecture"].update(TINY_2D)
        cfg["patch_size"] = patch
        cfg["batch_size"] = 2
    plan["schedule"].update(epochs=2, iterations_per_epoch=3)
    plan_path.write_text(json.dumps(plan, indent=2))


@pytest.mark.slow
def test_us2d_end_to_end(tmp_path, monkeypatch):
    from autoseg.phantoms import Us2dConfig, generate_phantom

    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    src = tmp_path / "src"
    small = Us2dConfig(shape=(48, 64))
    generate_phantom("us2d", src, 8, seed=3, config=small, progress=False)
    held = tmp_path / "held"
    cases = generate_phantom("us2d", held, 2, seed=4, config=small, progress=False)

    assert (
        main(
            [
                "convert",
                str(src),
                "--name",
                "Wrist",
                "--id",
                "7",
                "--label-names",
                "nerve",
                "--channel-names",
                "US",
                "--spacing",
                "0.1,0.1",
            ]
        )
        == 0
    )
    assert main(["plan", "7", "--brief"]) == 0
    plan_path = tmp_path / "root" / "preprocessed" / "007_Wrist" / "plans.json"
    shrink_plan(plan_path, ["2d"], [32, 32])
    argv = ["plan-and-train", "7", "--n-folds", "2", "--workers", "0", "--no-progress"]
    assert main([*argv, "--no-scale-views"]) == 0

    results = tmp_path / "root" / "results" / "007_Wrist"
    info = json.loads((results / "inference.json").read_text())
    assert info["configurations"] == ["2d"] and info["folds"] == [0, 1]
    assert info["tta_scales"] == [1.0] and "not tried" in info["scale_views"]["reason"]
    for fold in (0, 1):
        val = results / "2d" / f"fold_{fold}" / "validation"
        npz = sorted(val.glob("*.npz"))
        assert npz, "out-of-fold probabilities are kept for find-best"
        probs = np.load(npz[0])["probabilities"]
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)

    out = tmp_path / "pred"
    assert (
        main(["predict", "-i", str(held / "images"), "-o", str(out), "-d", "7", "--no-progress"])
        == 0
    )
    for case in cases:
        pred = read_image(out / f"{case.case_id}.png")
        src_img = read_image(held / "images" / f"{case.case_id}.png")
        assert pred.array.shape == src_img.array.shape  # the input's own grid and format
        assert set(np.unique(pred.array)) <= {0, 1}
    flags = json.loads((out / "predictions.json").read_text())
    assert set(flags["cases"]) == {c.case_id for c in cases}

    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(out),
                "--ref",
                str(held / "masks"),
                "--labels",
                "1",
                "--out",
                str(tmp_path / "eval"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "eval" / "metrics_per_case.csv").is_file()

    # another lab: export, import into a fresh root, predict with the imported model
    zip_path = tmp_path / "model.zip"
    assert main(["export-model", "7", "-o", str(zip_path)]) == 0
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "other_lab"))
    assert main(["import-model", str(zip_path)]) == 0
    out2 = tmp_path / "pred2"
    assert (
        main(["predict", "-i", str(held / "images"), "-o", str(out2), "-d", "7", "--no-progress"])
        == 0
    )
    for case in cases:
        a = read_image(out / f"{case.case_id}.png").array
        b = read_image(out2 / f"{case.case_id}.png").array
        np.testing.assert_array_equal(a, b)

    # --fp32 reaches the networks (no autocast) and changes next to nothing
    from autoseg.networks import precision as sw

    asked: list[bool] = []
    real = sw.autocast_dtype
    monkeypatch.setattr(sw, "autocast_dtype", lambda d, amp=True: asked.append(amp) or real(d, amp))
    out3 = tmp_path / "pred_fp32"
    argv = ["predict", "-i", str(held / "images"), "-o", str(out3), "-d", "7", "--no-progress"]
    assert main(argv + ["--fp32"]) == 0
    assert asked and not any(asked)
    for case in cases:
        a = read_image(out / f"{case.case_id}.png").array
        c = read_image(out3 / f"{case.case_id}.png").array
        assert (a == c).mean() > 0.99


@pytest.mark.slow
def test_one_training_split_on_a_coarser_grid(tmp_path, monkeypatch):
    """What a short budget plans: one model on fold 0's training cases, on a grid twice as
    coarse; it is validated on fold 0's hold-out, chosen, and predicts on the input's grid."""
    from autoseg.phantoms import Us2dConfig, generate_phantom

    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    small = Us2dConfig(shape=(48, 64))
    generate_phantom("us2d", tmp_path / "src", 8, seed=3, config=small, progress=False)
    held = tmp_path / "held"
    cases = generate_phantom("us2d", held, 2, seed=4, config=small, progress=False)
    argv = [
        "convert",
        str(tmp_path / "src"),
        "--name",
        "Wrist",
        "--id",
        "8",
        "--spacing",
        "0.1,0.1",
    ]
    assert main(argv) == 0
    assert main(["plan", "8", "--brief"]) == 0
    plan_path = tmp_path / "root" / "preprocessed" / "008_Wrist" / "plans.json"
    shrink_plan(plan_path, ["2d"], [16, 32])
    plan = json.loads(plan_path.read_text())
    plan["configurations"]["2d"]["spacing"] = [0.2, 0.2]
    plan["configurations"]["2d"]["median_shape"] = [24, 32]
    plan["schedule"]["folds"] = [0]
    plan_path.write_text(json.dumps(plan, indent=2))

    assert main(["plan-and-train", "8", "--n-folds", "2", "--no-progress"]) == 0
    results = tmp_path / "root" / "results" / "008_Wrist"
    assert sorted(p.name for p in (results / "2d").iterdir()) == ["fold_0"]
    assert (tmp_path / "root" / "preprocessed" / "008_Wrist" / "spacing_0.2x0.2").is_dir()
    info = json.loads((results / "inference.json").read_text())
    assert info["folds"] == [0]
    n_val = len(json.loads((results / "splits.json").read_text())[0]["val"])
    assert info["scale_views"]["n_cases"] == n_val  # the trial ran on the hold-out cases
    assert info["tta_scales"] in ([1.0], [1.0, 1.1, 1.2])
    assert info["estimate"]["kind"] == "hold_out" and info["estimate"]["n_splits"] == 2
    assert "not a cross-validation" in info["estimate"]["text"]
    assert main(["report", "8", "--no-progress"]) == 0
    assert "not a cross-validation" in (results / "report.html").read_text(encoding="utf-8")

    out = tmp_path / "pred"
    argv = ["predict", "-i", str(held / "images"), "-o", str(out), "-d", "8", "--no-progress"]
    assert main(argv) == 0
    for case in cases:
        pred = read_image(out / f"{case.case_id}.png")
        assert pred.array.shape == read_image(held / "images" / f"{case.case_id}.png").array.shape


@pytest.mark.slow
def test_mri3d_predict_keeps_exact_geometry_and_reports_bad_inputs(tmp_path, monkeypatch):
    from autoseg.phantoms import Mri3dConfig, generate_phantom

    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    src = tmp_path / "src"
    small = Mri3dConfig(shape=(6, 40, 40), spacing=(3.0, 1.5, 1.5))
    generate_phantom("mri3d", src, 6, seed=5, config=small, progress=False)
    assert (
        main(
            [
                "convert",
                str(src),
                "--name",
                "Thigh",
                "--id",
                "3",
                "--label-names",
                "nerve",
                "--channel-names",
                "T2",
            ]
        )
        == 0
    )
    assert main(["plan", "3", "--brief"]) == 0
    plan_path = tmp_path / "root" / "preprocessed" / "003_Thigh" / "plans.json"
    shrink_plan(plan_path, ["2d"], [32, 32])
    assert main(["train", "3", "2d", "0", "--n-folds", "2", "--workers", "0", "--no-progress"]) == 0

    # new scans: a NIfTI with a rotated direction and an NRRD, plus a corrupt file
    held = tmp_path / "held"
    held.mkdir()
    for f in sorted(src.iterdir())[:2]:
        stem, ext = split_extension(f.name)
        if ext and not stem.endswith("_mask"):
            shutil.copy(f, held / f.name)
    img = read_image(sorted(held.iterdir())[0])
    from autoseg.io import Geometry, write_image

    rotated = Geometry(
        img.geometry.spacing,
        (5.0, -3.0, 12.0),
        (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
        img.geometry.size,
    )
    write_image(held / "rotated.nrrd", img.array, rotated)
    (held / "broken.nii.gz").write_bytes(b"not an image at all")
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            "-i",
            str(held),
            "-o",
            str(out),
            "-d",
            "3",
            "--config",
            "2d",
            "--folds",
            "0",
            "--no-tta",
            "--no-progress",
        ]
    )
    assert code == 1  # one input failed; the others were written
    pred = read_image(out / "rotated.nrrd")
    assert pred.geometry.mismatch(rotated) is None
    assert pred.array.shape == img.array.shape
    report = json.loads((out / "predictions.json").read_text())
    assert "broken" in report["failed"] and "rotated" in report["cases"]
