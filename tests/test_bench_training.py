"""Pure helpers of benchmarks/bench_training.py: sizes, pinning, alternation, figures."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from benchmarks import bench_training as bt

NNUNET_THIGH_STRIDES = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]


def test_parse_cpus_accepts_taskset_lists() -> None:
    assert bt.parse_cpus("1") == [1]
    assert bt.parse_cpus("0,1") == [0, 1]
    assert bt.parse_cpus("2-4,0") == [0, 2, 3, 4]
    for bad in ("", "3-1", "-1"):
        with pytest.raises(ValueError):
            bt.parse_cpus(bad)


def test_total_strides_multiplies_stages_per_axis() -> None:
    assert bt.total_strides(NNUNET_THIGH_STRIDES) == [4, 32, 32]
    assert bt.total_strides([[1, 1], [2, 2], [2, 2]]) == [4, 4]


def test_check_patch_needs_multiples_of_the_total_stride() -> None:
    bt.check_patch([24, 160, 160], [4, 32, 32])
    with pytest.raises(ValueError, match="multiple"):
        bt.check_patch([24, 100, 160], [4, 32, 32])
    with pytest.raises(ValueError, match="axes"):
        bt.check_patch([160, 160], [4, 32, 32])


def test_scale_to_voxels_shrinks_batch_first_then_the_largest_axis() -> None:
    # batch 12 -> 2 before the patch is touched
    patch, batch = bt.scale_to_voxels([224, 288], 12, [32, 32], 2 * 224 * 288)
    assert (patch, batch) == ([224, 288], 2)
    # then the largest axis by its stride, keeping the patch valid for the network
    patch, batch = bt.scale_to_voxels([24, 160, 160], 2, [4, 32, 32], 200_000)
    assert batch == 2 and 2 * math.prod(patch) <= 200_000
    bt.check_patch(patch, [4, 32, 32])
    assert patch[0] == 24  # the thick axis keeps its few slices
    assert abs(patch[1] - patch[2]) <= 32  # in-plane shrunk alike


def test_scale_to_voxels_leaves_small_plans_alone_and_stops_at_the_floor() -> None:
    assert bt.scale_to_voxels([24, 64, 64], 2, [4, 16, 16], 10**9) == ([24, 64, 64], 2)
    patch, batch = bt.scale_to_voxels([8, 64, 64], 4, [4, 32, 32], 1)
    assert (patch, batch) == ([4, 32, 32], 2)


def test_choose_patch_batch_applies_overrides_then_the_cap() -> None:
    div = [4, 32, 32]
    assert bt.choose_patch_batch([24, 160, 160], 2, div) == ([24, 160, 160], 2)
    assert bt.choose_patch_batch([24, 160, 160], 2, div, new_patch=[16, 96, 96], new_batch=3) == (
        [16, 96, 96],
        3,
    )
    patch, batch = bt.choose_patch_batch([24, 160, 160], 2, div, max_voxels=100_000)
    assert batch * math.prod(patch) <= 100_000
    with pytest.raises(ValueError):
        bt.choose_patch_batch([24, 160, 160], 2, div, new_patch=[24, 150, 160])
    with pytest.raises(ValueError):
        bt.choose_patch_batch([24, 160, 160], 2, div, new_batch=0)


def test_resizing_edits_both_plan_formats_alike() -> None:
    autoseg_cfg = {
        "patch_size": [24, 160, 160],
        "batch_size": 2,
        "architecture": {"strides": NNUNET_THIGH_STRIDES},
    }
    nnunet_cfg = {
        "patch_size": [24, 160, 160],
        "batch_size": 2,
        "architecture": {"arch_kwargs": {"strides": NNUNET_THIGH_STRIDES}},
    }
    sizes = {"new_patch": None, "new_batch": None, "max_voxels": 200_000}
    note_a = bt._resize_autoseg_config(autoseg_cfg, sizes)
    note_n = bt._resize_nnunet_config(nnunet_cfg, sizes)
    assert note_a == note_n and "timed patch" in note_a
    assert autoseg_cfg["patch_size"] == nnunet_cfg["patch_size"]
    assert autoseg_cfg["batch_size"] == nnunet_cfg["batch_size"] == 2
    unchanged = {"patch_size": [32, 32], "batch_size": 2, "architecture": {"strides": [[1, 1]]}}
    assert bt._resize_autoseg_config(unchanged, dict(sizes, max_voxels=None)) == "as planned"


def test_epoch_and_step_summary() -> None:
    assert bt.epoch_seconds(0.2) == pytest.approx(50.0)
    s = bt.summarise_steps([0.1, 0.3, 0.2], cpu_s=0.3)
    assert s["iteration_s"] == pytest.approx(0.2)
    assert s["iterations_per_s"] == pytest.approx(5.0)
    assert s["epoch_s"] == pytest.approx(50.0)
    assert s["median_step_s"] == pytest.approx(0.2)
    assert s["cpu_per_iteration_s"] == pytest.approx(0.1)


def test_time_steps_warms_up_then_times_each_step() -> None:
    calls, syncs = [], []
    out = bt.time_steps(
        lambda: calls.append(1), warmup=2, iterations=3, sync=lambda: syncs.append(1)
    )
    assert len(calls) == 5 and len(out["step_s"]) == 3
    assert len(syncs) == 4  # once after the warm-up, once per timed step
    assert out["iteration_s"] >= 0


def test_alternation_swaps_who_goes_first() -> None:
    order = bt.alternation(3)
    assert [s for _, s in order] == ["autoseg", "nnunet", "nnunet", "autoseg", "autoseg", "nnunet"]
    assert [r for r, _ in order] == ["0", "0", "1", "1", "2", "2"]


def test_thread_env_sets_threads_and_nnunet_workers() -> None:
    env = bt.thread_env({"PATH": "/bin", "OMP_NUM_THREADS": "8"}, 2, 0)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["nnUNet_n_proc_DA"] == "0" and env["PATH"] == "/bin"


def test_fold_groups_fall_back_to_cases_for_one_subject() -> None:
    ids = [f"c{i}" for i in range(4)]
    assert bt.fold_groups(ids, ["s0", "s0", "s1", "s1"]) == (["s0", "s0", "s1", "s1"], 2)
    assert bt.fold_groups(ids, ["s0"] * 4) == (ids, 4)
    many = [f"c{i}" for i in range(20)]
    assert bt.fold_groups(many, many)[1] == 5


def test_make_results_gives_ratio_autoseg_over_nnunet() -> None:
    runs = {
        "autoseg": [
            {
                "iterations_per_s": 2.0,
                "epoch_s": 125.0,
                "peak_mb": 500.0,
                "cpu_per_iteration_s": 0.4,
            }
        ]
        * 3,
        "nnunet": [
            {"iterations_per_s": 1.0, "epoch_s": 250.0, "peak_mb": 1000.0, "cpu_per_iteration_s": 1}
        ]
        * 3,
    }
    rows = bt.make_results("3D thigh 3d_fullres, autoseg plan", runs, cuda=False)
    by_unit = {r.name.split(": ")[1]: r for r in rows}
    assert set(by_unit) == {"it/s", "s/epoch", "peak MB", "CPU s/it"}
    assert by_unit["it/s"].ratio == pytest.approx(2.0) and by_unit["it/s"].met is True
    assert by_unit["s/epoch"].ratio == pytest.approx(0.5)
    assert by_unit["peak MB"].better == "lower" and by_unit["peak MB"].target is None
    cuda_rows = bt.make_results("x", {**runs, "nnunet": []}, cuda=True)
    assert len(cuda_rows) == 5 and cuda_rows[0].ratio is None


def test_autoseg_driver_times_the_real_train_step(tmp_path: Path, monkeypatch, one_thread) -> None:
    """drive_autoseg on a small converted, planned and preprocessed ultrasound phantom."""
    import argparse

    from autoseg.phantoms import Us2dConfig, generate_phantom
    from autoseg.preprocessing.preprocess import preprocess_dataset

    ph = bt.Phantom("2d", "us2d", 962, "BenchTrainWrist", "US", "2d", "2D wrist")
    args = argparse.Namespace(time_budget="none", gpu_memory=None, device="cpu", threads=1)
    small = Us2dConfig(shape=(64, 96))
    real = generate_phantom

    def small_phantom(kind, out, n, **kw):
        return real(kind, out, n, config=small, **kw)

    monkeypatch.setattr("autoseg.phantoms.generate_phantom", small_phantom)
    prep = bt.prepare_phantom(ph, tmp_path, 3, args)
    assert prep.phantom.config in prep.plan["configurations"]
    assert len(prep.splits) >= 2 and all(f["val"] for f in prep.splits)
    preprocess_dataset(prep.raw, prep.root, configs=["2d"], num_workers=1, progress=False)
    run_args = argparse.Namespace(device="cpu", threads=1, workers=0, warmup=1, iterations=2)
    spec = bt._autoseg_spec(prep, prep.root, run_args)
    out = bt.drive_autoseg(spec)
    cfg = prep.plan["configurations"]["2d"]
    assert out["batch_shape"] == [cfg["batch_size"], 1, *cfg["patch_size"]]
    assert len(out["step_s"]) == 2 and out["iterations_per_s"] > 0
    assert out["cuda_peak_mb"] is None


def test_configuration_mismatches_compare_both_plan_formats() -> None:
    strides = [[1, 1], [2, 2]]
    kernels = [[3, 3], [3, 3]]
    ours = {
        "patch_size": [64, 64],
        "batch_size": 2,
        "architecture": {
            "features_per_stage": [8, 16],
            "strides": strides,
            "kernel_sizes": kernels,
            "n_blocks_per_stage": [2, 2],
            "deep_supervision": True,
        },
    }
    theirs = {
        "patch_size": [64, 64],
        "batch_size": 2,
        "architecture": {
            "arch_kwargs": {
                "features_per_stage": [8, 16],
                "strides": strides,
                "kernel_sizes": kernels,
                "n_conv_per_stage": [2, 2],
            }
        },
    }
    assert bt.configuration_mismatches(ours, theirs) == []
    theirs["batch_size"] = 3
    ours["architecture"]["deep_supervision"] = False
    found = bt.configuration_mismatches(ours, theirs)
    assert len(found) == 2 and found[0].startswith("batch_size")


def test_planner_estimate_counts_the_optimizer_state() -> None:
    from autoseg.networks.memory import estimate_training_memory
    from autoseg.planning.topology import architecture_block, fit_topology

    patch, topo = fit_topology([1.0, 1.0], [64, 64])
    arch = architecture_block(topo, network="unet", in_channels=1, num_classes=2)
    sgd = bt.planner_estimate_mb(arch, patch, 2, "sgd")
    adamw = bt.planner_estimate_mb(arch, patch, 2, "adamw")
    params = estimate_training_memory(arch, list(patch), 2).parameters_bytes / 2**20
    assert sgd > 0 and adamw - sgd == pytest.approx(params)  # one more fp32 copy
    with pytest.raises(KeyError):
        bt.planner_estimate_mb(arch, patch, 2, "lion")


def test_memory_check_compares_the_median_estimate_with_the_measured_peak() -> None:
    runs = {
        "autoseg": [
            {"estimated_cuda_mb": 1000.0, "cuda_peak_mb": 1100.0},
            {"estimated_cuda_mb": 1000.0, "cuda_peak_mb": 1050.0},
            {"estimated_cuda_mb": 1000.0, "cuda_peak_mb": 2000.0},
        ],
        "nnunet": [{"cuda_peak_mb": 5000.0}],
    }
    note = bt.memory_check("3D", runs)
    assert note is not None and note.startswith("3D: ")
    assert "1000 MB" in note and "1100 MB" in note and "ratio 0.91: matched" in note
    runs["autoseg"] = [{"estimated_cuda_mb": 1000.0, "cuda_peak_mb": 1500.0}]
    assert "ratio 0.67: did NOT match" in bt.memory_check("3D", runs)
    cpu_runs = {"autoseg": [{"estimated_cuda_mb": None, "cuda_peak_mb": None}]}
    assert bt.memory_check("3D", cpu_runs) is None


def test_brats_is_skipped_and_said_so_without_the_shared_data(tmp_path, monkeypatch, one_thread):
    import json

    from benchmarks import accuracy_cv

    assert bt.PHANTOMS["brats"].shared == "brats2015_subset"
    assert bt.PHANTOMS["brats"].dataset_id == accuracy_cv.DATASETS["brats2015_subset"][0]
    monkeypatch.setitem(accuracy_cv.SOURCES, "brats2015_subset", tmp_path / "absent")
    monkeypatch.setattr(bt, "BENCH_PYTHON", Path(sys.executable))  # no nnU-Net is started
    out = tmp_path / "training.json"
    args = ["--only", "brats", "--json", str(out), "--workdir", str(tmp_path / "w")]
    assert bt.main(args) == 0
    written = json.loads(out.read_text())
    assert written["results"] == [] and "skipped, shared data absent: brats" in written["notes"]
