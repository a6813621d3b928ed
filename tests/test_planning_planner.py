"""plan_dataset on hand-built fingerprints, run_plan / the CLI on a tiny dataset on disk, and a
few checks with the real network memory estimate."""

from __future__ import annotations

import json
import math

import pytest
from conftest import tiny_us_dataset

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.planning import load_plan, plan_dataset, plan_from_dict, run_plan
from autoseg.planning.configurations import LOWRES_COVERAGE
from autoseg.planning.patch import approximate_memory_gb
from autoseg.planning.synthetic import synthetic_fingerprint

FAKE = approximate_memory_gb


def _sciatic(**kw):
    return synthetic_fingerprint(
        "901_Sciatic",
        [40, 256, 256],
        [3.0, 0.75, 0.75],
        foreground_extent_mm={"1": [120.0, 10.0, 14.0]},
        **kw,
    )


def _plan(fp, **kw):
    kw.setdefault("gpu_memory_gb", 8)
    kw.setdefault("device", "cuda")
    kw.setdefault("estimator", FAKE)
    return plan_dataset(fp, **kw)


def test_anisotropic_nerve_mri_plan():
    plan = _plan(_sciatic())
    assert list(plan.configurations) == ["2d", "2.5d", "3d_fullres", "crop"]
    assert plan.target_spacing == [3.0, 0.75, 0.75]
    assert plan.resampling.thick_axis == 0
    two, two5, full, crop = (plan.configurations[k] for k in plan.configurations)
    assert two.slice_axis == 0 and two.spacing == [0.75, 0.75] and two.context_slices == 1
    assert two5.context_slices == 5 and two5.architecture["in_channels"] == 5
    assert full.architecture["strides"][1] == [1, 2, 2]  # thick axis not pooled first
    assert full.augmentation == "3d_anisotropic"
    assert crop.crop.localiser == "2d" and crop.crop.localiser_spacing == [0.75, 0.75]
    assert crop.crop.window_voxels[0] == 40 and crop.patch_size == crop.crop.window_voxels
    assert not crop.loss.batch_dice and full.loss.batch_dice
    assert full.oversample_foreground > 0.33  # 0.15 % foreground
    assert "3d_lowres not planned" in plan.why["configurations"]
    for c in plan.configurations.values():
        assert c.estimated_memory_gb <= 8 and c.batch_size >= 2 and c.parameters > 0
        for key in ("patch_size", "topology", "batch_size", "oversample_foreground"):
            rule, _, numbers = c.why[key].partition(": ")
            assert "." in rule and any(ch.isdigit() for ch in numbers), c.why[key]
        assert c.why["loss"].startswith("sampling.loss_rule: dice_ce")
    assert plan.why["target_spacing"].startswith("spacing.target_spacing: ")
    assert plan_from_dict(plan.to_dict()) == plan


def test_2d_ultrasound_plans_only_2d():
    fp = synthetic_fingerprint(
        "903_US",
        [468, 606],
        [1.0, 1.0],
        modality="ultrasound",
        foreground_fraction={"1": 0.006},
        foreground_extent_mm={"1": [40.0, 75.0]},
    )
    plan = _plan(fp)
    assert list(plan.configurations) == ["2d"]
    c = plan.configurations["2d"]
    assert c.slice_axis is None and c.dim == 2
    assert all(p <= m for p, m in zip(c.patch_size, c.median_shape))
    assert plan.normalization["0"].scheme == "zscore"
    assert plan.resampling.thick_axis is None


def test_large_ct_gets_lowres_and_ct_normalization():
    fp = synthetic_fingerprint(
        "905_CT",
        [300, 512, 512],
        [1.0, 0.8, 0.8],
        modality="ct",
        foreground_fraction={"1": 0.05},
        foreground_extent_mm={"1": [150.0, 150.0, 150.0]},
    )
    plan = _plan(fp, configs="3d_fullres,3d_lowres")
    full, low = plan.configurations["3d_fullres"], plan.configurations["3d_lowres"]
    full_cov = math.prod(full.patch_size) / math.prod(full.median_shape)
    low_cov = math.prod(low.patch_size) / math.prod(low.median_shape)
    assert full_cov < LOWRES_COVERAGE <= low_cov
    assert all(a > b for a, b in zip(low.spacing, full.spacing))
    assert math.prod(full.median_shape) >= 2 * math.prod(low.median_shape)
    norm = plan.normalization["0"]
    assert norm.scheme == "ct" and norm.clip[0] < norm.mean < norm.clip[1]


def test_thick_axis_last_slices_along_it():
    fp = synthetic_fingerprint(
        "906_Sagittal",
        [320, 320, 30],
        [0.5, 0.5, 4.0],
        foreground_extent_mm={"1": [10.0, 14.0, 120.0]},
    )
    plan = _plan(fp, configs="2d,2.5d,3d_fullres")
    assert plan.resampling.thick_axis == 2
    assert plan.configurations["2d"].slice_axis == 2
    assert plan.configurations["2.5d"].spacing == [0.5, 0.5]
    assert plan.configurations["3d_fullres"].architecture["strides"][1] == [2, 2, 1]


def test_configs_filter_and_errors():
    fp = _sciatic()
    plan = _plan(fp, configs=["3d_fullres", "crop"])
    assert list(plan.configurations) == ["3d_fullres", "crop"]
    assert plan.configurations["crop"].crop.localiser == "3d_fullres"
    with pytest.raises(AutosegError, match="unknown configuration"):
        _plan(fp, configs="3d")
    with pytest.raises(AutosegError, match="no configuration could be planned"):
        _plan(fp, configs="3d_lowres")
    us = synthetic_fingerprint("903_US", [100, 120], [1.0, 1.0], modality="ultrasound")
    with pytest.raises(AutosegError, match="does not apply to 2D"):
        _plan(us, configs="3d_fullres")


def test_small_budget_still_valid_and_too_small_fails():
    plan = _plan(_sciatic(), gpu_memory_gb=2)
    for c in plan.configurations.values():
        assert c.estimated_memory_gb <= 2 and c.batch_size >= 2
    assert plan.device.gpu_memory_gb == 2 and plan.device.source == "argument"
    with pytest.raises(AutosegError, match="--gpu-memory"):
        _plan(_sciatic(), gpu_memory_gb=0.3)


def test_device_default_budget_and_schedule():
    plan = plan_dataset(_sciatic(), configs="2d", estimator=FAKE)
    import torch

    if torch.cuda.is_available():
        assert plan.device.type == "cuda" and plan.device.source == "detected"
    else:
        assert plan.device.type == "cpu" and plan.device.gpu_memory_gb == 8.0
        assert plan.device.source == "default"
    assert plan.schedule.time_budget_s is None and plan.schedule.source == "default"
    assert (plan.schedule.epochs, plan.schedule.iterations_per_epoch) == (1000, 250)
    # with a time budget the iterations are timed (a fast fake device here) and the
    # schedule fitted: 600 s for 1 configuration x 5 folds
    timed = plan_dataset(
        _sciatic(),
        configs="2d",
        estimator=FAKE,
        time_budget_s=600.0,
        step_timer=lambda arch, patch, batch: 1e-4,
    )
    assert timed.schedule.time_budget_s == 600.0 and timed.schedule.source == "time_budget"
    assert timed.schedule.fold_budget_s == 120.0
    assert timed.configurations["2d"].measured_step_s == 1e-4
    assert timed.configurations["2d"].patch_size == plan.configurations["2d"].patch_size


def test_multichannel_resenc_2p5d():
    fp = _sciatic(channel_names={"0": "T2", "1": "T1"})
    plan = _plan(fp, configs="2.5d", network="resenc_unet")
    c = plan.configurations["2.5d"]
    assert c.architecture["network"] == "resenc_unet"
    assert c.architecture["in_channels"] == 2 * c.context_slices == 10
    with pytest.raises(AutosegError, match="unknown network"):
        _plan(fp, network="vnet")


def test_bad_fingerprints_raise_autoseg_errors():
    fp = _sciatic()
    del fp["aggregate"]
    with pytest.raises(AutosegError):
        _plan(fp)
    fp = _sciatic()
    fp["modality"] = {}
    with pytest.raises(AutosegError, match="modality"):
        _plan(fp)
    fp = _sciatic()
    fp["labels"] = {"nerve": 1}
    with pytest.raises(AutosegError, match="background"):
        _plan(fp)


def test_tiny_images_are_padded_to_the_minimal_input():
    fp = synthetic_fingerprint("907_Tiny", [6, 40], [1.0, 1.0], foreground_extent_mm={"1": [2, 4]})
    c = _plan(fp).configurations["2d"]
    assert c.patch_size[0] == 8 and "padded" in c.why["patch_size"]


# ---------------------------------------------------------------- real memory estimate


def test_real_estimator_small_plan_fits_budget():
    from autoseg.networks.memory import estimate_training_memory

    fp = synthetic_fingerprint(
        "908_SmallUS", [96, 128], [1.0, 1.0], modality="ultrasound", n_cases=4
    )
    plan = plan_dataset(fp, gpu_memory_gb=2, device="cuda")
    c = plan.configurations["2d"]
    real = estimate_training_memory(c.architecture, c.patch_size, c.batch_size)
    assert real.device_total_gb <= 2
    assert c.estimated_memory_gb == pytest.approx(real.device_total_gb, abs=1e-3)
    assert c.parameters == real.parameters_bytes // 4


def test_real_estimator_3d_budget_is_never_exceeded():
    from autoseg.networks.memory import estimate_training_memory

    fp = synthetic_fingerprint("909_Small3D", [24, 96, 96], [3.0, 0.75, 0.75], n_cases=4)
    plan = plan_dataset(fp, gpu_memory_gb=1.5, device="cuda", configs="3d_fullres")
    c = plan.configurations["3d_fullres"]
    assert (
        estimate_training_memory(c.architecture, c.patch_size, c.batch_size).device_total_gb <= 1.5
    )
    assert all(p % d == 0 for p, d in zip(c.patch_size, [2**n for n in c.pools_per_axis]))


# ---------------------------------------------------------------- files and CLI


def _tiny_raw_dataset(root):
    return tiny_us_dataset(root, 10, 2)


def test_run_plan_computes_fingerprint_and_keeps_existing(tmp_path):
    _tiny_raw_dataset(tmp_path)
    out = run_plan("10", tmp_path, gpu_memory_gb=2)
    assert out == tmp_path / "preprocessed" / "010_TinyUS" / "plans.json"
    assert (out.parent / "fingerprint.json").is_file()
    plan = load_plan(out)
    assert plan.dataset == "010_TinyUS" and plan.fingerprint.dim == 2
    assert plan.normalization["0"].scheme == "zscore"
    stamp = out.stat().st_mtime_ns
    run_plan("10", tmp_path, gpu_memory_gb=4)  # kept: may hold hand edits
    assert out.stat().st_mtime_ns == stamp
    run_plan("010_TinyUS", tmp_path, gpu_memory_gb=4, overwrite=True)
    assert load_plan(out).device.gpu_memory_gb == 4


def test_cli_plan_prints_table_and_why(tmp_path, capsys):
    _tiny_raw_dataset(tmp_path)
    argv = ["plan", "10", "--root", str(tmp_path), "--gpu-memory", "2", "--time-budget", "10m"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "patch" in out and "GPU mem" in out and "2d" in out
    assert "spacing.target_spacing:" in out and "plan written" in out
    plan = load_plan(tmp_path / "preprocessed" / "010_TinyUS" / "plans.json")
    assert plan.schedule.time_budget_s == 600.0
    assert main(argv + ["--brief"]) == 0
    out = capsys.readouterr().out
    assert "plan kept" in out and "Why:" not in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    _tiny_raw_dataset(tmp_path)
    assert main(["plan", "10", "--root", str(tmp_path), "--time-budget", "soon"]) == 2
    assert "time budget" in capsys.readouterr().err
    assert main(["plan", "10", "--root", str(tmp_path), "--configs", "3d_fullres"]) == 2
    assert "does not apply to 2D" in capsys.readouterr().err
    assert main(["plan", "99", "--root", str(tmp_path)]) == 2
    assert "no dataset" in capsys.readouterr().err


def test_plan_from_an_existing_fingerprint_without_raw_data(tmp_path):
    folder = tmp_path / "preprocessed" / "901_Sciatic"
    folder.mkdir(parents=True)
    (folder / "fingerprint.json").write_text(json.dumps(_sciatic()))
    out = run_plan("901_Sciatic", tmp_path, gpu_memory_gb=8, configs="2d")
    assert load_plan(out).configurations["2d"].patch_size == [256, 256]
