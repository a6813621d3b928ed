"""benchmarks/nnunet_bridge.py: autoseg's plans, folds and weights in nnU-Net v2 and back.

The pure tests run in autoseg's own environment. Those marked by ``nnunetv2`` fixtures build
nnU-Net's network exactly as its trainer and predictor do and skip without nnunetv2; run them
with ``.venv-bench/bin/python -m pytest tests/test_nnunet_bridge.py``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from autoseg.networks import build_network
from autoseg.planning.plan import plan_from_dict
from benchmarks import nnunet_bridge as bridge

REPO = Path(__file__).resolve().parents[1]
MRI_PLAN = json.loads((REPO / "plans" / "phantom_mri3d.plans.json").read_text("utf-8"))
US_PLAN = json.loads((REPO / "plans" / "phantom_us2d.plans.json").read_text("utf-8"))

SMALL_3D = {
    "network": "unet",
    "dim": 3,
    "in_channels": 1,
    "num_classes": 3,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 1, 1]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 2, 2],
    "n_conv_per_stage_decoder": [1, 2],  # unequal: catches a decoder-order mix-up
    "deep_supervision": True,
    "norm": "instance",
    "nonlin": "leaky_relu",
}
SMALL_2D = {
    **SMALL_3D,
    "dim": 2,
    "num_classes": 2,
    "features_per_stage": [4, 8, 8, 16],
    "kernel_sizes": [[3, 3], [3, 3], [3, 3], [3, 1]],
    "strides": [[1, 1], [2, 2], [2, 2], [1, 2]],
    "n_blocks_per_stage": [2, 1, 1, 1],
    "n_conv_per_stage_decoder": [2, 1, 2],
}


def _small_plan(base: dict, config: str, arch: dict, patch: list[int]) -> dict:
    """A golden plan whose ``config`` has a tiny network and patch (fast to run)."""
    plan = copy.deepcopy(base)
    plan["labels"] = {"background": 0, **{f"l{i}": i for i in range(1, arch["num_classes"])}}
    cfg = plan["configurations"][config]
    cfg["architecture"] = copy.deepcopy(arch)
    cfg["patch_size"] = list(patch)
    return plan


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from initialisation (norm affine and biases too), so a wrong mapping shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


# --------------------------------------------------------------------------- plans, pure


def test_export_of_3d_configuration_matches_autoseg() -> None:
    out = bridge.nnunet_plans_from_autoseg(MRI_PLAN, "3d_fullres", "Dataset901_Thigh")
    ours = MRI_PLAN["configurations"]["3d_fullres"]
    cfg = out["configurations"]["3d_fullres"]
    assert list(out["configurations"]) == ["3d_fullres"]
    assert out["plans_name"] == "autosegPlans" and out["dataset_name"] == "Dataset901_Thigh"
    assert out["transpose_forward"] == out["transpose_backward"] == [0, 1, 2]
    assert out["image_reader_writer"] == "SimpleITKIO"
    assert cfg["spacing"] == ours["spacing"]
    assert cfg["patch_size"] == ours["patch_size"]
    assert cfg["batch_size"] == ours["batch_size"]
    assert cfg["batch_dice"] == ours["loss"]["batch_dice"]
    assert cfg["data_identifier"] == "autosegPlans_3d_fullres"
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"]
    assert cfg["use_mask_for_norm"] == [False]
    kw = cfg["architecture"]["arch_kwargs"]
    arch = ours["architecture"]
    assert cfg["architecture"]["network_class_name"].endswith("unet.PlainConvUNet")
    assert kw["n_stages"] == len(arch["features_per_stage"])
    assert kw["features_per_stage"] == arch["features_per_stage"]
    assert kw["kernel_sizes"] == arch["kernel_sizes"]
    assert kw["strides"] == arch["strides"]
    assert kw["n_conv_per_stage"] == arch["n_blocks_per_stage"]
    assert kw["n_conv_per_stage_decoder"] == arch["n_conv_per_stage_decoder"][::-1]
    assert kw["conv_op"].endswith("Conv3d") and kw["norm_op"].endswith("InstanceNorm3d")
    assert kw["norm_op_kwargs"] == {"eps": 1e-05, "affine": True}
    assert kw["nonlin"].endswith("LeakyReLU") and kw["dropout_op"] is None
    # anisotropic: cubic in plane, nearest across the thick axis 0 (the target's thick axis)
    data = cfg["resampling_fn_data_kwargs"]
    assert (data["order"], data["order_z"], data["force_separate_z"]) == (3, 0, None)
    seg = cfg["resampling_fn_seg_kwargs"]
    assert (seg["is_seg"], seg["order"], seg["order_z"]) == (True, 1, 0)
    json.dumps(out, allow_nan=False)  # JSON-ready


def test_export_of_2d_data_uses_nnunets_dummy_axis() -> None:
    fingerprint = {
        "aggregate": {"intensity": {"0": {"mean": 100.0, "std": 30.0, "p00_5": 5.0}}},
        "cases": [
            {"spacing": [1.0, 1.0], "shape": [256, 320], "shape_after_crop": [200, 320]},
            {"spacing": [1.0, 1.0], "shape": [256, 320], "shape_after_crop": [256, 320]},
        ],
    }
    out = bridge.nnunet_plans_from_autoseg(US_PLAN, "2d", "Dataset902_Wrist", fingerprint)
    cfg = out["configurations"]["2d"]
    assert out["original_median_spacing_after_transp"] == [999.0, 1.0, 1.0]
    assert out["original_median_shape_after_transp"] == [1, 235, 281]
    assert cfg["spacing"] == [1.0, 1.0] and cfg["patch_size"] == [224, 256]
    assert cfg["architecture"]["arch_kwargs"]["conv_op"].endswith("Conv2d")
    props = out["foreground_intensity_properties_per_channel"]["0"]
    assert props["mean"] == 100.0 and props["percentile_00_5"] == 5.0 and props["max"] is None
    fp = bridge.nnunet_fingerprint(US_PLAN, fingerprint)
    assert fp["spacings"] == [[999.0, 1.0, 1.0]] * 2
    assert fp["shapes_after_crop"] == [[1, 200, 320], [1, 256, 320]]
    assert fp["median_relative_size_after_cropping"] == pytest.approx((200 / 256 + 1) / 2)


def test_2d_slices_across_another_axis_transpose_that_axis_first() -> None:
    plan = copy.deepcopy(MRI_PLAN)
    plan["configurations"]["2d"]["slice_axis"] = 2
    out = bridge.nnunet_plans_from_autoseg(plan, "2d", "Dataset901_Thigh")
    assert out["transpose_forward"] == [2, 0, 1]
    assert out["transpose_backward"] == [1, 2, 0]
    assert out["original_median_spacing_after_transp"] == [0.75, 3.0, 0.75]
    assert bridge.inverse_permutation([2, 0, 1]) == [1, 2, 0]


def test_ct_normalisation_takes_the_plans_clip_and_statistics() -> None:
    plan = copy.deepcopy(MRI_PLAN)
    plan["normalization"]["0"] = {
        "scheme": "ct",
        "use_nonzero_mask": True,
        "clip": [-100.0, 300.0],
        "mean": 50.0,
        "std": 80.0,
    }
    out = bridge.nnunet_plans_from_autoseg(plan, "3d_fullres", "Dataset901_Thigh")
    cfg = out["configurations"]["3d_fullres"]
    assert cfg["normalization_schemes"] == ["CTNormalization"]
    assert cfg["use_mask_for_norm"] == [False]
    props = out["foreground_intensity_properties_per_channel"]["0"]
    assert (props["percentile_00_5"], props["percentile_99_5"]) == (-100.0, 300.0)
    assert (props["mean"], props["std"]) == (50.0, 80.0)


def test_zscore_with_nonzero_mask_uses_nnunets_mask() -> None:
    plan = copy.deepcopy(MRI_PLAN)
    plan["normalization"]["0"]["use_nonzero_mask"] = True
    out = bridge.nnunet_plans_from_autoseg(plan, "3d_fullres", "Dataset901_Thigh")
    assert out["configurations"]["3d_fullres"]["use_mask_for_norm"] == [True]


def test_resampling_cannot_name_an_axis_so_it_is_forced_only_when_needed() -> None:
    assert bridge.separate_z_setting(None, [3.0, 0.75, 0.75]) is None
    assert bridge.separate_z_setting(0, [3.0, 0.75, 0.75]) is None  # target decides: axis 0
    assert bridge.separate_z_setting(0, [3.0, 1.5, 1.5]) is True  # target not anisotropic


def test_unsupported_configurations_and_networks_are_refused_clearly() -> None:
    with pytest.raises(bridge.BridgeError, match="2.5D"):
        bridge.nnunet_plans_from_autoseg(MRI_PLAN, "2.5d", "Dataset901_Thigh")
    with pytest.raises(bridge.BridgeError, match="localiser"):
        bridge.nnunet_plans_from_autoseg(MRI_PLAN, "crop", "Dataset901_Thigh")
    with pytest.raises(bridge.BridgeError, match="not in the plan"):
        bridge.nnunet_plans_from_autoseg(MRI_PLAN, "3d_lowres", "Dataset901_Thigh")
    resenc = {**SMALL_3D, "network": "resenc_unet"}
    with pytest.raises(bridge.BridgeError, match="resenc_unet"):
        bridge.nnunet_architecture(resenc)
    with pytest.raises(bridge.BridgeError, match="resenc_unet"):
        bridge.nnunet_state_dict(build_network(resenc).state_dict(), resenc)
    bad = bridge.nnunet_architecture(SMALL_3D)
    bad["arch_kwargs"]["dropout_op"] = "torch.nn.Dropout3d"
    with pytest.raises(bridge.BridgeError, match="dropout"):
        bridge.autoseg_architecture(bad, 1, 3)
    other = {**bad, "network_class_name": "x.ResidualEncoderUNet"}
    with pytest.raises(bridge.BridgeError, match="PlainConvUNet"):
        bridge.autoseg_architecture(other, 1, 3)


@pytest.mark.parametrize("arch", [SMALL_3D, SMALL_2D], ids=["3d", "2d"])
def test_architecture_round_trip(arch: dict) -> None:
    back = bridge.autoseg_architecture(bridge.nnunet_architecture(arch), 1, arch["num_classes"])
    assert back == arch


def _round_trip(plan: dict, config: str, permutation: list[int] | None = None) -> dict:
    nn_plans = bridge.nnunet_plans_from_autoseg(plan, config, "Dataset901_Thigh")
    if permutation is not None:  # as nnU-Net's own planner would store a transposed 3D plan
        cfg = nn_plans["configurations"][config]
        kw = cfg["architecture"]["arch_kwargs"]
        for key in ("spacing", "patch_size", "median_image_size_in_voxels"):
            cfg[key] = [cfg[key][a] for a in permutation]
        for key in ("kernel_sizes", "strides"):
            kw[key] = [[v[a] for a in permutation] for v in kw[key]]
        nn_plans["transpose_forward"] = permutation
        nn_plans["transpose_backward"] = bridge.inverse_permutation(permutation)
    return bridge.autoseg_plan_from_nnunet(nn_plans, config, plan)


_TAKEN = ("spacing", "patch_size", "batch_size", "architecture", "slice_axis", "median_shape")


@pytest.mark.parametrize("permutation", [None, [2, 0, 1]])
def test_plan_import_puts_nnunets_values_back_in_array_order(permutation: Any) -> None:
    back = _round_trip(MRI_PLAN, "3d_fullres", permutation)
    plan_from_dict(back)  # valid for autoseg
    ours, theirs = MRI_PLAN["configurations"]["3d_fullres"], back["configurations"]["3d_fullres"]
    assert {k: theirs[k] for k in _TAKEN} == {k: ours[k] for k in _TAKEN}
    assert theirs["augmentation"] == ours["augmentation"]
    assert theirs["parameters"] == ours["parameters"]
    assert theirs["estimated_memory_gb"] > 0
    assert "nnU-Net" in theirs["why"]["patch_size"]
    assert back["normalization"] == MRI_PLAN["normalization"]


def test_plan_import_of_a_transposed_2d_configuration_sets_the_slice_axis() -> None:
    plan = copy.deepcopy(MRI_PLAN)
    plan["configurations"] = {"2d": plan["configurations"]["2d"]}
    plan["configurations"]["2d"]["slice_axis"] = 2
    back = _round_trip(plan, "2d")
    theirs = back["configurations"]["2d"]
    assert theirs["slice_axis"] == 2
    assert {k: theirs[k] for k in _TAKEN} == {k: plan["configurations"]["2d"][k] for k in _TAKEN}


def test_plan_import_under_another_name_and_of_2d_data() -> None:
    nn_plans = bridge.nnunet_plans_from_autoseg(US_PLAN, "2d", "Dataset902_Wrist")
    nn_plans["configurations"]["2d"]["patch_size"] = [128, 192]
    back = bridge.autoseg_plan_from_nnunet(nn_plans, "2d", US_PLAN)
    assert back["configurations"]["2d"]["patch_size"] == [128, 192]
    assert back["configurations"]["2d"]["slice_axis"] is None
    with pytest.raises(bridge.BridgeError, match="autoseg knows"):
        bridge.autoseg_plan_from_nnunet(nn_plans, "2d", US_PLAN, name="nnunet_2d")
    nn_plans["configurations"]["2d"]["patch_size"] = [128, 160]
    with pytest.raises(bridge.BridgeError, match="multiple of 64"):
        bridge.autoseg_plan_from_nnunet(nn_plans, "2d", US_PLAN)


# --------------------------------------------------------------------------- splits, pure


def test_splits_are_copied_fold_for_fold(tmp_path: Path) -> None:
    from autoseg.training.splits import make_splits

    splits = make_splits([f"case_{i:03d}" for i in range(7)], n_folds=3)
    path = tmp_path / "pre" / "splits_final.json"
    bridge.write_nnunet_splits(splits + [], path)
    assert json.loads(path.read_text("utf-8")) == splits
    bridge.write_nnunet_splits([{"train": ["a"], "val": ["b"], "subjects": ["s"]}], path)
    assert json.loads(path.read_text("utf-8")) == [{"train": ["a"], "val": ["b"]}]
    with pytest.raises(bridge.BridgeError, match="train"):
        bridge.write_nnunet_splits([{"val": ["b"]}], path)


# --------------------------------------------------------------------------- weights, pure


@pytest.mark.parametrize(
    "arch",
    [SMALL_3D, SMALL_2D, {**SMALL_3D, "deep_supervision": False}],
    ids=["3d", "2d", "no_deep_supervision"],
)
def test_weight_map_covers_autoseg_network_exactly(arch: dict) -> None:
    state = _randomised(build_network(arch)).state_dict()
    rows = bridge.weight_map(arch)
    ours = {a: shape for a, _, shape in rows if a is not None}
    assert set(ours) == set(state)
    assert all(tuple(state[k].shape) == s for k, s in ours.items())
    theirs = bridge.nnunet_state_dict(state, arch)
    # every nnU-Net tensor is there under each of its names, aliases share storage
    key = "encoder.stages.0.0.convs.0"
    assert theirs[f"{key}.conv.weight"] is theirs[f"{key}.all_modules.0.weight"]
    assert theirs[f"decoder.{key}.norm.bias"] is theirs[f"{key}.all_modules.1.bias"]
    assert not theirs[f"{key}.conv.bias"].any()  # conv bias before instance norm: 0
    n = len(arch["features_per_stage"])
    assert f"decoder.seg_layers.{n - 2}.weight" in theirs  # full resolution = last in nnU-Net
    back = bridge.autoseg_state_dict(theirs, arch)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_weight_transfer_refuses_mismatched_states() -> None:
    state = build_network(SMALL_3D).state_dict()
    wider = {**SMALL_3D, "features_per_stage": [4, 8, 32]}
    with pytest.raises(bridge.BridgeError, match="shape"):
        bridge.nnunet_state_dict(state, wider)
    with pytest.raises(bridge.BridgeError, match="no 'heads.0.weight'"):
        bridge.nnunet_state_dict(
            {k: v for k, v in state.items() if k != "heads.0.weight"}, SMALL_3D
        )
    with pytest.raises(bridge.BridgeError, match="lacks"):
        bridge.nnunet_state_dict({**state, "extra.weight": torch.zeros(1)}, SMALL_3D)
    compiled = {f"_orig_mod.{k}": v for k, v in state.items()}
    assert set(bridge.nnunet_state_dict(compiled, SMALL_3D)) == set(
        bridge.nnunet_state_dict(state, SMALL_3D)
    )


# --------------------------------------------------------------------------- nnU-Net's own code


@pytest.fixture(scope="module")
def nnunet() -> Any:
    return pytest.importorskip("nnunetv2")


def _nnunet_network(nn_plans: dict, config: str, in_ch: int, out_ch: int, deep: bool) -> Any:
    """nnU-Net's network exactly as nnUNetTrainer.initialize / the predictor build it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(nn_plans)
    return nnUNetTrainer.build_network_architecture(
        manager, manager.get_configuration(config), in_ch, out_ch, deep
    )


_CASES = [
    (MRI_PLAN, "3d_fullres", SMALL_3D, [8, 16, 24], "Dataset901_Thigh"),
    (US_PLAN, "2d", SMALL_2D, [16, 24], "Dataset902_Wrist"),
]


@pytest.mark.parametrize(("base", "config", "arch", "patch", "name"), _CASES, ids=["3d", "2d"])
def test_nnunet_network_equals_autoseg_network_after_transfer(
    nnunet: Any, one_thread: None, base: dict, config: str, arch: dict, patch: list, name: str
) -> None:
    plan = _small_plan(base, config, arch, patch)
    nn_plans = bridge.nnunet_plans_from_autoseg(plan, config, name)
    ours = _randomised(build_network(arch), seed=1)
    x = torch.randn(2, arch["in_channels"], *patch, generator=torch.Generator().manual_seed(2))
    k = arch["num_classes"]

    # autoseg -> nnU-Net: inference network (no deep supervision) and training network
    theirs = _nnunet_network(nn_plans, config, arch["in_channels"], k, deep=False)
    theirs.load_state_dict(bridge.nnunet_state_dict(ours.state_dict(), arch), strict=True)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() < 1e-4
    train = _nnunet_network(nn_plans, config, arch["in_channels"], k, deep=True)
    train.load_state_dict(bridge.nnunet_state_dict(ours.state_dict(), arch), strict=True)
    ours.train()
    with torch.no_grad():
        a, b = ours(x), train(x)
    assert [o.shape for o in a] == [o.shape for o in b]
    assert max((p - q).abs().max().item() for p, q in zip(a, b)) < 1e-4

    # nnU-Net -> autoseg, with nonzero conv biases (they cancel under instance norm)
    _randomised(theirs, seed=3)
    assert theirs.state_dict()["encoder.stages.0.0.convs.0.conv.bias"].abs().sum() > 0
    back = build_network(arch)
    back.load_state_dict(bridge.autoseg_state_dict(theirs.state_dict(), arch), strict=True)
    back.eval()
    with torch.no_grad():
        assert (back(x) - theirs(x)).abs().max() < 1e-4


def test_written_model_loads_in_nnunets_predictor(
    nnunet: Any, one_thread: None, tmp_path: Path
) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    plan = _small_plan(MRI_PLAN, "3d_fullres", SMALL_3D, [8, 16, 24])
    nn_plans = bridge.nnunet_plans_from_autoseg(plan, "3d_fullres", "Dataset901_Thigh")
    dataset_json = {
        "channel_names": {"0": "T2"},
        "labels": plan["labels"],
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    fold0 = _randomised(build_network(SMALL_3D), seed=4)
    fold1 = _randomised(build_network(SMALL_3D), seed=5)
    states = {0: fold0.state_dict(), 1: bridge.nnunet_state_dict(fold1.state_dict(), SMALL_3D)}
    folder = bridge.write_nnunet_model(
        tmp_path, "Dataset901_Thigh", nn_plans, "3d_fullres", dataset_json, states
    )
    assert folder == tmp_path / "Dataset901_Thigh" / "nnUNetTrainer__autosegPlans__3d_fullres"
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), (0, 1))
    assert predictor.allowed_mirroring_axes == (0, 1, 2)
    x = torch.randn(1, 1, 8, 16, 24)
    for fold, ours in ((0, fold0), (1, fold1)):
        predictor.network.load_state_dict(predictor.list_of_parameters[fold])
        predictor.network.eval()
        ours.eval()
        with torch.no_grad():
            assert (predictor.network(x) - ours(x)).abs().max() < 1e-4


# --------------------------------------------------------------------------- end to end


def _bench_bin(name: str) -> Path:
    return Path(sys.executable).parent / name


def _nnunet_env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(base / "raw"),
        nnUNet_preprocessed=str(base / "preprocessed"),
        nnUNet_results=str(base / "results"),
        nnUNet_n_proc_DA="0",
        nnUNet_def_n_proc="1",
        nnUNet_compile="0",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _phantom_dataset(tmp_path: Path, kind: str) -> tuple[Path, dict, dict, str]:
    """3 tiny phantom cases converted and planned by autoseg: (raw dir, plan, fingerprint,
    configuration)."""
    from autoseg.fingerprint import run_fingerprint
    from autoseg.io.convert import convert_folder
    from autoseg.phantoms import Mri3dConfig, Us2dConfig, generate_phantom
    from autoseg.planning import plan_dataset
    from autoseg.planning.patch import approximate_memory_gb

    small = Mri3dConfig(shape=(8, 48, 48)) if kind == "mri3d" else Us2dConfig(shape=(64, 80))
    generate_phantom(kind, tmp_path / "src", n_cases=3, seed=1, progress=False, config=small)
    root = tmp_path / "autoseg"
    result = convert_folder(
        tmp_path / "src",
        "Phantom",
        7,
        root=root,
        label_names=["nerve"],
        num_workers=1,
        progress=False,
    )
    fp_path = run_fingerprint(result.target, root, num_workers=1, progress=False)
    fingerprint = json.loads(fp_path.read_text("utf-8"))
    config = "3d_fullres" if kind == "mri3d" else "2d"
    plan = plan_dataset(
        fingerprint,
        gpu_memory_gb=8.0,
        device="cuda",
        configs=config,
        estimator=approximate_memory_gb,
    ).to_dict()
    return result.target, plan, fingerprint, config


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mri3d", "us2d"])
def test_nnunet_preprocesses_and_predicts_autosegs_configuration(
    nnunet: Any, tmp_path: Path, kind: str
) -> None:
    """Export, ``nnUNetv2_preprocess`` of autoseg's configuration, ``nnUNetv2_predict`` with
    random autoseg weights written by write_nnunet_model: a segmentation of the input's
    geometry. ~20-40 s per kind on a free core (two CLI start-ups)."""
    import SimpleITK as sitk

    raw, plan, fingerprint, config = _phantom_dataset(tmp_path, kind)
    base = tmp_path / "nnunet"
    folder = bridge.prepare_nnunet_dataset(
        raw, base / "raw", base / "preprocessed", plan, config, 7, fingerprint
    )
    assert folder == "Dataset007_Phantom"
    pre = base / "preprocessed" / folder
    assert {p.name for p in pre.iterdir()} >= {
        "autosegPlans.json",
        "dataset.json",
        "dataset_fingerprint.json",
    }
    env = _nnunet_env(base)
    cmd = [str(_bench_bin("nnUNetv2_preprocess")), "-d", "7", "-plans_name", "autosegPlans"]
    _run(cmd + ["-c", config, "-np", "1"], env)
    arrays = sorted((pre / f"autosegPlans_{config}").glob("*.b2nd"))
    assert len(arrays) == 6  # image + labels of 3 cases

    nn_plans = json.loads((pre / "autosegPlans.json").read_text("utf-8"))
    arch = plan["configurations"][config]["architecture"]
    dataset_json = json.loads((pre / "dataset.json").read_text("utf-8"))
    bridge.write_nnunet_model(
        base / "results",
        folder,
        nn_plans,
        config,
        dataset_json,
        {0: build_network(arch).state_dict()},
    )
    image = sorted((base / "raw" / folder / "imagesTr").iterdir())[0]
    (tmp_path / "in").mkdir()
    os.link(image, tmp_path / "in" / image.name)
    cmd = [str(_bench_bin("nnUNetv2_predict")), "-i", str(tmp_path / "in")]
    cmd += ["-o", str(tmp_path / "out"), "-d", "7", "-c", config, "-p", "autosegPlans"]
    _run(cmd + ["-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"], env)
    seg = sitk.ReadImage(str(tmp_path / "out" / image.name.replace("_0000", "")))
    src = sitk.ReadImage(str(image))
    assert seg.GetSize() == src.GetSize()
    assert seg.GetSpacing() == pytest.approx(src.GetSpacing())


def test_written_model_mirrors_the_axes_it_is_given(tmp_path):
    """nnU-Net's test-time mirroring follows the axes passed (autoseg's trained ones)."""
    plan = _small_plan(MRI_PLAN, "3d_fullres", SMALL_3D, [8, 16, 24])
    nn_plans = bridge.nnunet_plans_from_autoseg(plan, "3d_fullres", "Dataset901_Thigh")
    dataset_json = {"channel_names": {"0": "T2"}, "labels": plan["labels"], "numTraining": 2}
    states = {0: build_network(SMALL_3D).state_dict()}
    for axes, expected in ((None, (0, 1, 2)), ((2,), (2,))):
        folder = bridge.write_nnunet_model(
            tmp_path / str(axes), "Dataset901_Thigh", nn_plans, "3d_fullres", dataset_json,
            states, mirror_axes=axes,
        )  # fmt: skip
        ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
        assert ckpt["inference_allowed_mirroring_axes"] == expected
