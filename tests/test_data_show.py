"""show_batch draws a real picture; ``autoseg show-batch`` finds plan and data and writes it."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from autoseg.cli import main
from autoseg.cli import show_batch as cli_show_batch
from autoseg.data.dataset import write_case_arrays
from autoseg.data.show import label_colour, panel_arrays, show_batch
from autoseg.errors import AutosegError


def _batch3d(n=3):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 1, 8, 40, 40)).astype(np.float32)
    target = np.zeros((n, 1, 8, 40, 40), np.uint8)
    target[:, :, 4, 10:25, 10:25] = 1
    target[:, :, 4, 28:34, 28:34] = 2
    data[target > 0] += 4
    return {"data": data, "target": target, "keys": [f"case_{i}" for i in range(n)]}


def _colour_pixels(png, hex_colour: str, tol: int = 40) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - want).max(axis=2) < tol).sum())


def test_show_batch_writes_a_non_blank_png_with_contours(tmp_path):
    out = show_batch(_batch3d(), tmp_path / "b.png", title="test")
    img = np.asarray(Image.open(out).convert("L")).astype(float)
    assert img.shape[0] > 100 and img.shape[1] > 300
    assert img.std() > 20  # not a blank canvas
    assert _colour_pixels(out, label_colour(1)[0]) > 50  # label 1 outlined in orange
    assert _colour_pixels(out, label_colour(2)[0]) > 10  # label 2 in sky blue
    assert not list(tmp_path.glob(".partial-*"))  # written atomically


def test_panels_pick_middle_slice_and_centre_of_stack():
    b = _batch3d(1)
    image, mask, where = panel_arrays(b["data"], b["target"], 0)
    assert image.shape == (40, 40) and (mask > 0).sum() == 15 * 15 + 36 and where == "z=4/8"
    stack = np.stack([np.full((4, 4), v, np.float32) for v in range(6)])[None]  # C=2, k=3
    image, _, _ = panel_arrays(stack, np.zeros((1, 1, 4, 4), np.uint8), 0, channel=1, slices=3)
    assert (image == 4).all()  # channel 1, centre slice: index 1 * 3 + 1


def _preprocessed_dataset(root):
    ds = root / "preprocessed" / "007_Nerve"
    data = ds / "fullres"
    data.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(2):
        img = rng.normal(size=(1, 6, 64, 64)).astype(np.float32)
        seg = np.zeros((6, 64, 64), np.uint8)
        seg[:, 30:36, 28:34] = 1
        write_case_arrays(data, f"c{i}", img, seg)
    (data / "manifest.json").write_text(
        json.dumps({"configurations": ["3d_fullres", "2d"], "cases": ["c0", "c1"]})
    )
    plan = {
        "fingerprint": {"modality": {"0": "mri"}},
        "resampling": {"thick_axis": 0},
        "configurations": {
            "3d_fullres": {
                "dim": 3,
                "spacing": [3.0, 0.5, 0.5],
                "patch_size": [4, 32, 32],
                "batch_size": 2,
                "augmentation": "3d_anisotropic",
                "oversample_foreground": 0.33,
                "context_slices": 1,
            },
            "2d": {
                "dim": 2,
                "spacing": [0.5, 0.5],
                "patch_size": [48, 48],
                "batch_size": 12,
                "augmentation": "2d",
                "slice_axis": 0,
                "context_slices": 1,
            },
        },
    }
    (ds / "plans.json").write_text(json.dumps(plan))
    return ds


def _run(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_show_batch.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_show_batch(tmp_path, monkeypatch, capsys):
    _preprocessed_dataset(tmp_path)
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path))
    out = tmp_path / "grid.png"
    assert _run(["show-batch", "7", "--config", "3d_fullres", "--n", "3", "--out", str(out)]) == 0
    assert out.is_file() and np.asarray(Image.open(out)).std() > 10
    assert "3 patches of 3d_fullres" in capsys.readouterr().out
    assert (
        _run(["show-batch", "007_Nerve", "--config", "2d", "--out", str(out), "--no-augment"]) == 0
    )
    with pytest.raises(AutosegError, match="not in the plan"):
        _run(["show-batch", "7", "--config", "3d_lowres"])
    with pytest.raises(AutosegError, match="no single preprocessed dataset"):
        _run(["show-batch", "8"])


def test_cli_through_main(tmp_path, monkeypatch):
    _preprocessed_dataset(tmp_path)
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path))
    out = tmp_path / "m.png"
    assert main(["show-batch", "7", "--config", "2d", "--n", "4", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["show-batch", "7", "--config", "crop"]) == 2  # clean error, no traceback
