"""Bridge between autoseg and nnU-Net v2: the same configuration, data and weights in both.

The benchmarks compare the two systems on *equal* terms, so this module translates:

- **plans**: :func:`nnunet_plans_from_autoseg` writes one autoseg configuration as an nnU-Net
  v2 plans dict (same spacing, patch, batch, a ``PlainConvUNet`` with the same stages,
  kernels, strides, widths and convolutions per stage, instance norm, leaky ReLU, deep
  supervision; normalisation and resampling orders mapped); :func:`autoseg_plan_from_nnunet`
  goes the other way (nnU-Net's spacing, patch, batch and network into an autoseg plan);
- **data**: :func:`prepare_nnunet_dataset` exports the raw dataset and writes the plans,
  ``dataset.json`` and ``dataset_fingerprint.json`` so that ``nnUNetv2_preprocess -d ID
  -plans_name autosegPlans -c CONFIG`` and ``nnUNetTrainer`` run autoseg's configuration;
  :func:`write_nnunet_splits` gives nnU-Net autoseg's folds;
- **weights**: :func:`nnunet_state_dict` / :func:`autoseg_state_dict` move weights between
  autoseg's ``UNet`` (network ``unet``) and nnU-Net's ``PlainConvUNet``, and
  :func:`write_nnunet_model` writes an nnU-Net results folder so that ``nnUNetv2_predict``
  runs autoseg-trained weights.

Axis order: both systems keep SimpleITK's array order ``(z, y, x)`` (nnU-Net's
``SimpleITKIO`` reads ``(c, z, y, x)`` with spacing ``(z, y, x)``; a 2D image becomes
``(c, 1, y, x)`` with spacing ``(999 * max, y, x)``). The exported plans therefore use the
identity ``transpose_forward``, except for a 2D configuration of 3D data whose slices are cut
across axis ``a != 0``: nnU-Net always slices across its (transposed) axis 0, so
``transpose_forward`` is ``[a, other axes ascending]``.

What cannot be made identical (nnU-Net's code has no switch for it) is listed in
:data:`KNOWN_DIFFERENCES`. Only the weight functions need torch; nothing here imports
nnunetv2, so the module works in autoseg's own environment too.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autoseg.io.atomic import atomic_path, write_json_atomic
from autoseg.networks.unet import ArchitectureConfig

PLANS_NAME = "autosegPlans"
TRAINER = "nnUNetTrainer"
PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
CONV_OPS = {2: "torch.nn.modules.conv.Conv2d", 3: "torch.nn.modules.conv.Conv3d"}
NORM_OPS = {
    2: "torch.nn.modules.instancenorm.InstanceNorm2d",
    3: "torch.nn.modules.instancenorm.InstanceNorm3d",
}
NONLIN = "torch.nn.LeakyReLU"
NORMALIZATION_CLASSES = {"zscore": "ZScoreNormalization", "ct": "CTNormalization"}
# nnU-Net's SimpleITKIO handles these endings; autoseg's convert writes .nii.gz only.
SIMPLEITK_ENDINGS = (".nii.gz", ".nrrd", ".mha", ".gipl")
# nnU-Net's spacing of the dummy axis of a 2D image (SimpleITKIO: 999 x the largest spacing).
DUMMY_SPACING_FACTOR = 999.0
ANISOTROPY_RATIO = 3.0  # both systems' threshold for separate resampling of a thick axis
# Prefixes a saved state dict may carry: torch.compile's wrapper, DDP's wrapper.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")

KNOWN_DIFFERENCES = (
    "2D configuration of 3D data: autoseg resamples the slice axis to the plan's target "
    "spacing, nnU-Net keeps each case's slice spacing (equal when all cases share it)",
    "resampling: nnU-Net cannot force the plan's thick axis; it picks each case's thick axis "
    "(the source spacing's, else the target's), autoseg the plan's; labels: both resample "
    "one-hot maps linearly, autoseg takes the argmax, nnU-Net thresholds each label at 0.5",
    "nonzero mask (use_nonzero_mask): nnU-Net fills holes in it and crops to it alone, "
    "autoseg does not fill holes and its crop box also covers labelled voxels",
    "conv biases: nnU-Net's convolutions before instance norm have biases (exported as 0; "
    "they cancel exactly under instance norm and are dropped on the way back)",
    "nnUNetTrainer always trains with deep supervision, foreground oversampling 0.33, its own "
    "loss weights, augmentation and schedule: the plan does not carry those",
)


class BridgeError(ValueError):
    """A plan, network or state the other system cannot represent (the message says why)."""


# --------------------------------------------------------------------------- small helpers


def _as_dict(obj: Any) -> dict[str, Any]:
    """A plan/fingerprint given as an autoseg dataclass (``to_dict``) or as a dict."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if not isinstance(obj, Mapping):
        raise BridgeError(f"expected a dict, got {type(obj).__name__}")
    return dict(obj)


def _unet_config(arch: Mapping[str, Any] | ArchitectureConfig) -> ArchitectureConfig:
    """autoseg's architecture block, validated, and checked to have a PlainConvUNet twin.

    Why only ``unet``: autoseg's ``resenc_unet`` shortcut is a strided 1x1 conv, nnU-Net's
    ResidualEncoderUNet (BasicBlockD) average-pools before a 1x1 conv — a different function,
    so no weight mapping can make the two networks equal.
    """
    try:
        cfg = ArchitectureConfig.from_dict(arch)
    except ValueError as exc:
        raise BridgeError(f"architecture: {exc}") from None
    if cfg.network != "unet":
        raise BridgeError(
            f"network {cfg.network!r} has no nnU-Net equivalent: only 'unet' maps to "
            "PlainConvUNet (autoseg's resenc_unet uses strided 1x1 shortcuts, nnU-Net's "
            "ResidualEncoderUNet average-pools in its shortcuts)"
        )
    if cfg.n_stages < 2:
        raise BridgeError("a 1-stage network has no decoder; PlainConvUNet needs >= 2 stages")
    return cfg


def inverse_permutation(perm: Sequence[int]) -> list[int]:
    """``inv`` with ``inv[perm[i]] = i`` (nnU-Net's transpose_backward of transpose_forward)."""
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[int(p)] = i
    return inv


def transpose_for(data_dim: int, slice_axis: int | None) -> list[int]:
    """nnU-Net's ``transpose_forward`` that makes its axis 0 autoseg's slice axis.

    Identity for 3D configurations and 2D data; for a 2D configuration of 3D data the slice
    axis first, the in-plane axes after it in ascending order (autoseg's in-plane order).
    """
    if data_dim == 2 or slice_axis is None:
        return [0, 1, 2]
    return [int(slice_axis)] + [a for a in range(3) if a != slice_axis]


def _spacing_3d(values: Sequence[float]) -> list[float]:
    """A spacing as nnU-Net stores it: 2D data get the dummy axis 0 (999 x the largest)."""
    values = [float(v) for v in values]
    if len(values) == 2:
        return [DUMMY_SPACING_FACTOR * max(values), *values]
    return values


def _shape_3d(values: Sequence[float]) -> list[int]:
    values = [int(round(float(v))) for v in values]
    return [1, *values] if len(values) == 2 else values


def _permute(values: Sequence[Any], order: Sequence[int]) -> list[Any]:
    return [values[int(i)] for i in order]


# --------------------------------------------------------------------------- architecture


def nnunet_architecture(arch: Mapping[str, Any] | ArchitectureConfig) -> dict[str, Any]:
    """nnU-Net's ``architecture`` block (PlainConvUNet) for autoseg's ``unet`` block.

    ``conv_bias`` is True because nnU-Net gives its transposed convs the encoder's
    ``conv_bias`` and autoseg's transposed convs have a bias; the biases of the convs before
    instance norm are then set to 0 (:func:`nnunet_state_dict`). ``deep_supervision`` is not
    written: nnU-Net's trainer sets it (on in training, off at inference), like autoseg.
    """
    cfg = _unet_config(arch)
    return {
        "network_class_name": PLAIN_UNET,
        "arch_kwargs": {
            "n_stages": cfg.n_stages,
            "features_per_stage": list(cfg.features_per_stage),
            "conv_op": CONV_OPS[cfg.dim],
            "kernel_sizes": [list(k) for k in cfg.kernel_sizes],
            "strides": [list(s) for s in cfg.strides],
            "n_conv_per_stage": list(cfg.n_blocks_per_stage),
            # nnU-Net lists decoder stages coarsest first, autoseg by resolution (full first)
            "n_conv_per_stage_decoder": list(reversed(cfg.n_conv_per_stage_decoder)),
            "conv_bias": True,
            "norm_op": NORM_OPS[cfg.dim],
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": NONLIN,
            "nonlin_kwargs": {"inplace": True, "negative_slope": 0.01},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _per_stage(value: Any, n: int, dim: int) -> list[list[int]]:
    """nnU-Net allows a scalar per stage or per axis; autoseg needs per-stage per-axis lists."""
    if isinstance(value, int):
        return [[value] * dim for _ in range(n)]
    return [[int(v)] * dim if isinstance(v, int) else [int(x) for x in v] for v in value]


def _per_stage_ints(value: Any, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def autoseg_architecture(
    nnunet_arch: Mapping[str, Any],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = True,
) -> dict[str, Any]:
    """autoseg's ``unet`` block for nnU-Net's PlainConvUNet ``architecture`` block (axes as
    nnU-Net stores them). Raises :class:`BridgeError` for anything autoseg cannot build
    identically (another class, dropout, another norm or nonlinearity, other eps/slope)."""
    name = str(nnunet_arch.get("network_class_name", ""))
    if name.rsplit(".", 1)[-1] != "PlainConvUNet":
        raise BridgeError(f"nnU-Net network {name!r}: only PlainConvUNet maps to autoseg's unet")
    kw = nnunet_arch["arch_kwargs"]
    dims = {v: k for k, v in CONV_OPS.items()}
    conv = str(kw["conv_op"])
    dim = dims.get(conv) or {"Conv2d": 2, "Conv3d": 3}.get(conv.rsplit(".", 1)[-1])
    if dim is None:
        raise BridgeError(f"conv_op {conv!r}: expected Conv2d or Conv3d")
    if str(kw.get("norm_op", "")).rsplit(".", 1)[-1] != f"InstanceNorm{dim}d":
        raise BridgeError(f"norm_op {kw.get('norm_op')!r}: autoseg has instance norm only")
    norm_kw = kw.get("norm_op_kwargs") or {}
    if not norm_kw.get("affine", False) or not math.isclose(norm_kw.get("eps", 1e-5), 1e-5):
        raise BridgeError(f"norm_op_kwargs {norm_kw}: autoseg uses affine=True, eps=1e-5")
    if str(kw.get("nonlin", "")).rsplit(".", 1)[-1] != "LeakyReLU":
        raise BridgeError(f"nonlin {kw.get('nonlin')!r}: autoseg has LeakyReLU only")
    slope = (kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01)
    if not math.isclose(slope, 0.01):
        raise BridgeError(f"LeakyReLU negative_slope {slope}: autoseg uses 0.01")
    if kw.get("dropout_op") is not None:
        raise BridgeError("dropout_op: autoseg's unet has no dropout")
    n = int(kw["n_stages"])
    features = kw["features_per_stage"]
    features = [int(features)] * n if isinstance(features, int) else [int(f) for f in features]
    arch = {
        "network": "unet",
        "dim": dim,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "features_per_stage": features,
        "kernel_sizes": _per_stage(kw["kernel_sizes"], n, dim),
        "strides": _per_stage(kw["strides"], n, dim),
        "n_blocks_per_stage": _per_stage_ints(kw["n_conv_per_stage"], n),
        "n_conv_per_stage_decoder": list(
            reversed(_per_stage_ints(kw["n_conv_per_stage_decoder"], n - 1))
        ),
        "deep_supervision": bool(deep_supervision),
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
    _unet_config(arch)  # validates (odd kernels, first stride 1, lengths)
    return arch


# ------------------------------------------------------------------ plans: autoseg -> nnU-Net


def _check_exportable(plan: Mapping[str, Any], config: str) -> dict[str, Any]:
    configs = plan.get("configurations", {})
    if config not in configs:
        raise BridgeError(f"configuration {config!r} is not in the plan (it has {list(configs)})")
    cfg = configs[config]
    if int(cfg.get("context_slices", 1)) != 1:
        raise BridgeError(
            f"configuration {config!r} feeds {cfg['context_slices']} neighbouring slices "
            "(2.5D); nnU-Net has no such configuration"
        )
    if cfg.get("crop") is not None:
        raise BridgeError(
            f"configuration {config!r} trains on a window around the structure and predicts "
            "after a localiser; nnU-Net has no such configuration"
        )
    _unet_config(cfg["architecture"])
    return cfg


def normalization_schemes(plan: Mapping[str, Any]) -> tuple[list[str], list[bool]]:
    """nnU-Net's ``normalization_schemes`` and ``use_mask_for_norm`` per channel.

    ``zscore`` -> ZScoreNormalization (per image; the nonzero mask exactly when autoseg uses
    it); ``ct`` -> CTNormalization (clip and dataset statistics, no mask in either system).
    """
    schemes, masks = [], []
    for c in sorted(plan["normalization"], key=int):
        norm = plan["normalization"][c]
        scheme = norm["scheme"]
        if scheme not in NORMALIZATION_CLASSES:
            raise BridgeError(f"normalization.{c}.scheme {scheme!r} has no nnU-Net class")
        schemes.append(NORMALIZATION_CLASSES[scheme])
        masks.append(bool(norm.get("use_nonzero_mask", False)) if scheme == "zscore" else False)
    return schemes, masks


def _is_nnunet_fingerprint(fp: Mapping[str, Any] | None) -> bool:
    return fp is not None and "foreground_intensity_properties_per_channel" in fp


def intensity_properties(
    plan: Mapping[str, Any], fingerprint: Mapping[str, Any] | None = None
) -> dict[str, dict[str, float | None]]:
    """nnU-Net's ``foreground_intensity_properties_per_channel``.

    CTNormalization reads ``mean``, ``std``, ``percentile_00_5`` and ``percentile_99_5``;
    they are taken from the plan's ``ct`` block (clip and statistics) so both systems apply
    the very same transform. The other numbers come from the fingerprint (autoseg's or
    nnU-Net's); unknown ones are null (nnU-Net reads them for CT only).
    """
    out: dict[str, dict[str, float | None]] = {}
    for c in sorted(plan["normalization"], key=int):
        props: dict[str, float | None] = dict.fromkeys(
            ("max", "mean", "median", "min", "percentile_00_5", "percentile_99_5", "std")
        )
        if _is_nnunet_fingerprint(fingerprint):
            props.update(fingerprint["foreground_intensity_properties_per_channel"].get(c, {}))
        elif fingerprint is not None:
            stats = fingerprint.get("aggregate", {}).get("intensity", {}).get(c) or {}
            for ours, theirs in (
                ("mean", "mean"),
                ("std", "std"),
                ("p00_5", "percentile_00_5"),
                ("p99_5", "percentile_99_5"),
                ("min", "min"),
                ("max", "max"),
                ("median", "median"),
            ):
                if stats.get(ours) is not None:
                    props[theirs] = float(stats[ours])
        norm = plan["normalization"][c]
        if norm["scheme"] == "ct":
            props["percentile_00_5"], props["percentile_99_5"] = map(float, norm["clip"])
            props["mean"], props["std"] = float(norm["mean"]), float(norm["std"])
        out[c] = props
    return out


def _unique_thick_axis(spacing: Sequence[float]) -> int | None:
    """The axis whose spacing is > 3x the finest and uniquely the largest, else None."""
    if max(spacing) / min(spacing) <= ANISOTROPY_RATIO:
        return None
    largest = [i for i, s in enumerate(spacing) if math.isclose(s, max(spacing), rel_tol=1e-6)]
    return largest[0] if len(largest) == 1 else None


def separate_z_setting(thick_axis: int | None, target_spacing: Sequence[float]) -> bool | None:
    """nnU-Net's ``force_separate_z`` closest to autoseg's resampling rule.

    autoseg forces the plan's ``thick_axis`` when there is one, else applies nnU-Net's own
    per-case rule (source spacing, then target). nnU-Net cannot name an axis: ``None`` is its
    per-case rule, ``True`` the source's thick axis. With a plan thick axis that is also the
    target's thick axis, ``None`` picks it for every case (also isotropic sources) -> None;
    otherwise ``True`` (the source's thick axis, the plan's for a typical case).
    """
    if thick_axis is None:
        return None
    return None if _unique_thick_axis(target_spacing) == thick_axis else True


def resampling_settings(
    plan: Mapping[str, Any], target_spacing_3d: Sequence[float]
) -> dict[str, Any]:
    """The six ``resampling_fn_*`` entries of an nnU-Net configuration for autoseg's orders.

    Images: ``image_order`` in plane, ``image_order_thick_axis`` across the thick axis;
    labels: ``label_order`` / ``label_order_thick_axis`` on one-hot maps; probabilities at
    export: linear in plane, nearest across the thick axis (autoseg's inversion too).
    ``target_spacing_3d`` is in nnU-Net's (transposed) axis order.
    """
    rs = plan["resampling"]
    thick = rs.get("thick_axis")
    data_dim = len(plan["target_spacing"])
    if thick is not None and data_dim == 2:
        thick = int(thick) + 1
    separate = separate_z_setting(thick, target_spacing_3d)
    fn = "resample_data_or_seg_to_shape"

    def kwargs(is_seg: bool, order: int, order_z: int) -> dict[str, Any]:
        return {
            "is_seg": is_seg,
            "order": int(order),
            "order_z": int(order_z),
            "force_separate_z": separate,
        }

    return {
        "resampling_fn_data": fn,
        "resampling_fn_seg": fn,
        "resampling_fn_data_kwargs": kwargs(False, rs["image_order"], rs["image_order_thick_axis"]),
        "resampling_fn_seg_kwargs": kwargs(True, rs["label_order"], rs["label_order_thick_axis"]),
        "resampling_fn_probabilities": fn,
        "resampling_fn_probabilities_kwargs": kwargs(False, 1, 0),
    }


def nnunet_plans_from_autoseg(
    plan: dict,
    config: str,
    dataset_name: str,
    fingerprint: dict | None = None,
    plans_name: str = PLANS_NAME,
) -> dict:
    """nnU-Net v2 plans with ONE configuration named ``config``, identical to autoseg's.

    Same spacing (per axis), patch size, batch size, batch Dice, network (PlainConvUNet:
    stages, widths, kernels, strides, convs per encoder and decoder stage, instance norm eps
    1e-5 affine, LeakyReLU 0.01), normalisation (:func:`normalization_schemes`,
    :func:`intensity_properties`) and resampling orders (:func:`resampling_settings`).
    ``fingerprint`` (autoseg's ``fingerprint.json`` or nnU-Net's ``dataset_fingerprint.json``
    as a dict) only fills informational intensity statistics. Raises :class:`BridgeError`
    for 2.5D and crop configurations and for ``resenc_unet``.
    """
    plan = _as_dict(plan)
    fingerprint = None if fingerprint is None else _as_dict(fingerprint)
    cfg = _check_exportable(plan, config)
    data_dim = int(plan["fingerprint"]["dim"])
    slice_axis = cfg.get("slice_axis")
    forward = transpose_for(data_dim, slice_axis)
    schemes, masks = normalization_schemes(plan)
    spacing = [float(s) for s in cfg["spacing"]]
    if int(cfg["dim"]) == 3:
        spacing_3d = spacing
    elif data_dim == 2:
        spacing_3d = _spacing_3d(spacing)
    else:  # slices of 3D data: the slice axis keeps the plan's target spacing in autoseg
        spacing_3d = [float(plan["target_spacing"][forward[0]]), *spacing]
    summary = plan["fingerprint"]
    configuration = {
        "data_identifier": f"{plans_name}_{config}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(cfg["batch_size"]),
        "patch_size": [int(p) for p in cfg["patch_size"]],
        "median_image_size_in_voxels": [float(m) for m in cfg["median_shape"]],
        "spacing": spacing,
        "normalization_schemes": schemes,
        "use_mask_for_norm": masks,
        **resampling_settings(plan, spacing_3d),
        "architecture": nnunet_architecture(cfg["architecture"]),
        "batch_dice": bool(cfg.get("loss", {}).get("batch_dice", True)),
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": _permute(
            _spacing_3d(summary["spacing_median"]), forward
        ),
        "original_median_shape_after_transp": _permute(
            _shape_3d(summary["shape_after_crop_median"]), forward
        ),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": forward,
        "transpose_backward": inverse_permutation(forward),
        "configurations": {config: configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity_properties(plan, fingerprint),
    }


def nnunet_fingerprint(
    plan: Mapping[str, Any], fingerprint: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """nnU-Net's ``dataset_fingerprint.json`` (its trainer copies it into the results).

    From autoseg's fingerprint when given (per-case spacings and cropped shapes, the median
    share of the image kept by cropping), else the plan's medians; an nnU-Net fingerprint is
    returned as it is. Only nnU-Net's planner uses the numbers, which this bridge replaces.
    """
    if _is_nnunet_fingerprint(fingerprint):
        return dict(fingerprint)  # type: ignore[arg-type]
    plan = _as_dict(plan)
    props = intensity_properties(plan, fingerprint)
    if fingerprint is not None and fingerprint.get("cases"):
        cases = fingerprint["cases"]
        ratios = sorted(
            math.prod(c["shape_after_crop"]) / max(1, math.prod(c["shape"])) for c in cases
        )
        mid = len(ratios) // 2
        median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
        return {
            "foreground_intensity_properties_per_channel": props,
            "median_relative_size_after_cropping": float(median),
            "shapes_after_crop": [_shape_3d(c["shape_after_crop"]) for c in cases],
            "spacings": [_spacing_3d(c["spacing"]) for c in cases],
        }
    summary = plan["fingerprint"]
    return {
        "foreground_intensity_properties_per_channel": props,
        "median_relative_size_after_cropping": None,
        "shapes_after_crop": [_shape_3d(summary["shape_after_crop_median"])],
        "spacings": [_spacing_3d(summary["spacing_median"])],
    }


# ------------------------------------------------------------------ plans: nnU-Net -> autoseg


def nnunet_configuration(nnunet_plans: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One configuration of nnU-Net plans with ``inherits_from`` resolved (as PlansManager)."""
    configs = nnunet_plans["configurations"]
    if name not in configs:
        raise BridgeError(f"nnU-Net plans have no configuration {name!r} (have {list(configs)})")
    seen: list[str] = []
    resolved: dict[str, Any] = {}
    current: str | None = name
    while current is not None:
        if current in seen:
            raise BridgeError(f"nnU-Net configurations inherit in a circle: {seen + [current]}")
        seen.append(current)
        entry = configs[current]
        resolved = {**copy.deepcopy(entry), **resolved}
        current = entry.get("inherits_from")
    resolved.pop("inherits_from", None)
    return resolved


def _template(plan: Mapping[str, Any], name: str, dim: int, slices: bool) -> dict[str, Any]:
    """The autoseg configuration whose non-network fields the imported one keeps: the one of
    the same name, else one of the same kind (dimension, slicing)."""
    configs = plan["configurations"]
    if name in configs:
        return copy.deepcopy(configs[name])
    for cand in ("3d_fullres", "3d_lowres", "2d", "crop", "2.5d"):
        c = configs.get(cand)
        if c is not None and c["dim"] == dim and (c.get("slice_axis") is not None) == slices:
            return copy.deepcopy(c)
    raise BridgeError(f"the autoseg plan has no {dim}D configuration to take the other fields from")


def autoseg_plan_from_nnunet(
    nnunet_plans: dict, nnunet_config: str, plan: dict, name: str | None = None
) -> dict:
    """autoseg plan (valid for ``autoseg.planning.load_plan``) whose configuration
    ``name or nnunet_config`` takes nnU-Net's spacing, median shape, patch size, batch size
    and network; everything else (normalisation, resampling, augmentation, loss, sampling,
    schedule, the other configurations) comes from ``plan``.

    nnU-Net's per-axis values are in its transposed order; they are put back into array
    order (a 2D configuration of 3D data gets ``slice_axis`` = ``transpose_forward[0]``).
    """
    from autoseg.planning.patch import network_memory_gb, parameter_count
    from autoseg.planning.plan import CONFIG_NAMES, plan_from_dict

    out = copy.deepcopy(_as_dict(plan))
    name = name or nnunet_config
    if name not in CONFIG_NAMES:
        raise BridgeError(f"configuration name {name!r}: autoseg knows {CONFIG_NAMES}")
    nn_cfg = nnunet_configuration(nnunet_plans, nnunet_config)
    forward = [int(a) for a in nnunet_plans.get("transpose_forward", [0, 1, 2])]
    data_dim = int(out["fingerprint"]["dim"])
    dim = len(nn_cfg["patch_size"])
    if dim > data_dim:
        raise BridgeError(f"nnU-Net configuration {nnunet_config!r} is 3D, the data are 2D")
    slice_axis: int | None = None
    if dim == 3:
        order = inverse_permutation(forward)  # array axis j <- transposed axis order[j]
    elif data_dim == 3:
        slice_axis = forward[0]
        order = [0, 1] if forward[1] < forward[2] else [1, 0]
    else:
        order = [0, 1]

    def arr(values: Sequence[Any]) -> list[Any]:
        return _permute(list(values), order)

    template = _template(out, name, dim, slice_axis is not None)
    base_arch = template["architecture"]
    arch = autoseg_architecture(
        nn_cfg["architecture"],
        in_channels=len(out["channel_names"]),
        num_classes=len(out["labels"]),
        deep_supervision=bool(base_arch.get("deep_supervision", True)),
    )
    arch["kernel_sizes"] = [arr(k) for k in arch["kernel_sizes"]]
    arch["strides"] = [arr(s) for s in arch["strides"]]
    patch = [int(p) for p in arr(nn_cfg["patch_size"])]
    batch = int(nn_cfg["batch_size"])
    try:
        ArchitectureConfig.from_dict(arch).check_patch_size(patch)
    except ValueError as exc:
        raise BridgeError(f"nnU-Net configuration {nnunet_config!r}: {exc}") from None
    source = f"nnU-Net v2 plans {nnunet_plans.get('plans_name', '?')!r}, configuration "
    source += f"{nnunet_config!r}"
    configuration = {
        **template,
        "dim": dim,
        "spacing": [float(s) for s in arr(nn_cfg["spacing"])],
        "median_shape": [
            max(1, int(round(float(m)))) for m in arr(nn_cfg["median_image_size_in_voxels"])
        ],
        "patch_size": patch,
        "batch_size": batch,
        "architecture": arch,
        "slice_axis": slice_axis,
        "context_slices": 1,
        "crop": None,
        "parameters": parameter_count(arch),
        "estimated_memory_gb": round(network_memory_gb(arch, tuple(patch), batch), 3),
        "why": {
            **{k: v for k, v in template.get("why", {}).items() if k not in _IMPORTED},
            **{k: f"taken from {source}" for k in _IMPORTED},
        },
    }
    same_kind = (template.get("slice_axis") is None) == (slice_axis is None)
    if template["dim"] != dim or not same_kind:
        configuration["augmentation"] = "2d" if dim == 2 else "3d"
    configuration.pop("measured_step_s", None)  # timed for another network
    out["configurations"][name] = configuration
    return plan_from_dict(out).to_dict()


_IMPORTED = ("spacing", "median_shape", "patch_size", "batch_size", "topology")


# --------------------------------------------------------------------------- weights


def _conv_aliases(key: str) -> list[str]:
    """Every name nnU-Net's state dict has for one tensor of a ConvDropoutNormReLU.

    ``.conv.``/``.norm.`` are also registered as ``.all_modules.0.``/``.all_modules.1.``
    (no dropout), and the decoder holds the encoder again as ``decoder.encoder``.
    """
    names = [key]
    if ".conv." in key:
        names.append(key.replace(".conv.", ".all_modules.0."))
    elif ".norm." in key:
        names.append(key.replace(".norm.", ".all_modules.1."))
    if key.startswith("encoder."):
        names += ["decoder." + n for n in names]
    return names


def weight_map(
    arch: Mapping[str, Any] | ArchitectureConfig,
) -> list[tuple[str | None, str, tuple[int, ...]]]:
    """``(autoseg key or None, nnU-Net key, shape)`` for every tensor of the PlainConvUNet.

    ``None``: a tensor autoseg does not have — the biases of convs before instance norm, and
    the deep-supervision heads of a network built without deep supervision (both 0 in
    nnU-Net; neither changes the full-resolution output). Decoder and heads are indexed by
    resolution in autoseg (0 = full) and in computation order in nnU-Net (0 = coarsest).
    """
    cfg = _unet_config(arch)
    n, dim = cfg.n_stages, cfg.dim
    feats, kernels, strides = cfg.features_per_stage, cfg.kernel_sizes, cfg.strides
    rows: list[tuple[str | None, str, tuple[int, ...]]] = []

    def conv_block(ours: str, theirs: str, c_in: int, c_out: int, kernel: Sequence[int]) -> None:
        rows.append((f"{ours}.0.weight", f"{theirs}.conv.weight", (c_out, c_in, *kernel)))
        rows.append((None, f"{theirs}.conv.bias", (c_out,)))
        rows.append((f"{ours}.1.weight", f"{theirs}.norm.weight", (c_out,)))
        rows.append((f"{ours}.1.bias", f"{theirs}.norm.bias", (c_out,)))

    c_in = cfg.in_channels
    for s in range(n):
        for j in range(cfg.n_blocks_per_stage[s]):
            theirs = f"encoder.stages.{s}.0.convs.{j}"
            conv_block(f"encoder.{s}.{j}", theirs, c_in, feats[s], kernels[s])
            c_in = feats[s]
    n_heads = len(cfg.decoder_scales())
    for i in range(n - 1):
        k = n - 2 - i
        up = (feats[i + 1], feats[i], *strides[i + 1])
        rows.append((f"upsample.{i}.weight", f"decoder.transpconvs.{k}.weight", up))
        rows.append((f"upsample.{i}.bias", f"decoder.transpconvs.{k}.bias", (feats[i],)))
        for j in range(cfg.n_conv_per_stage_decoder[i]):
            width_in = 2 * feats[i] if j == 0 else feats[i]
            theirs = f"decoder.stages.{k}.convs.{j}"
            conv_block(f"decoder.{i}.{j}", theirs, width_in, feats[i], kernels[i])
        head = (cfg.num_classes, feats[i], *([1] * dim))
        has = i < n_heads
        rows.append((f"heads.{i}.weight" if has else None, f"decoder.seg_layers.{k}.weight", head))
        rows.append(
            (f"heads.{i}.bias" if has else None, f"decoder.seg_layers.{k}.bias", (head[0],))
        )
    return rows


def _unwrapped(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without torch.compile / DDP prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _checked(key: str, value: torch.Tensor, shape: tuple[int, ...], side: str) -> torch.Tensor:
    if tuple(value.shape) != tuple(shape):
        raise BridgeError(
            f"{side} tensor {key!r} has shape {tuple(value.shape)}, the architecture needs "
            f"{tuple(shape)}"
        )
    return value


def nnunet_state_dict(
    autoseg_state: Mapping[str, torch.Tensor], arch: dict
) -> dict[str, torch.Tensor]:
    """autoseg ``UNet`` weights -> a complete ``PlainConvUNet`` state dict (every alias key).

    Conv biases before instance norm are 0 (exact: the norm subtracts the per-channel mean);
    deep-supervision heads autoseg lacks are 0 (nnU-Net's inference uses only the last one).
    ``load_state_dict(strict=True)`` of nnU-Net's network built from
    :func:`nnunet_architecture` accepts the result.
    """
    state = _unwrapped(autoseg_state)
    out: dict[str, torch.Tensor] = {}
    used = set()
    for ours, theirs, shape in weight_map(arch):
        if ours is None:
            tensor = torch.zeros(shape)
        elif ours not in state:
            raise BridgeError(f"autoseg state has no {ours!r} (needed for {theirs!r})")
        else:
            tensor = _checked(ours, state[ours], shape, "autoseg").detach().clone()
            used.add(ours)
        for alias in _conv_aliases(theirs):
            out[alias] = tensor
    extra = sorted(set(state) - used)
    if extra:
        raise BridgeError(f"autoseg state has tensors the architecture lacks: {extra[:5]}")
    return out


def autoseg_state_dict(
    nnunet_state: Mapping[str, torch.Tensor], arch: dict
) -> dict[str, torch.Tensor]:
    """``PlainConvUNet`` weights -> autoseg ``UNet`` state dict for ``arch`` (autoseg's block).

    Conv biases before instance norm are dropped (they cancel exactly under the norm);
    nnU-Net's extra deep-supervision heads are dropped when ``arch`` has no deep supervision.
    Either name of a duplicated tensor (``.conv.`` or ``.all_modules.0.``) is accepted.
    """
    state = _unwrapped(nnunet_state)
    out: dict[str, torch.Tensor] = {}
    for ours, theirs, shape in weight_map(arch):
        if ours is None:
            continue
        found = next((a for a in _conv_aliases(theirs) if a in state), None)
        if found is None:
            raise BridgeError(f"nnU-Net state has no {theirs!r} (needed for {ours!r})")
        out[ours] = _checked(found, state[found], shape, "nnU-Net").detach().clone()
    return out


def _complete_nnunet_state(
    state: Mapping[str, torch.Tensor], arch: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """An nnU-Net state dict with every alias present (wrapper prefixes removed)."""
    state = _unwrapped(state)
    out = dict(state)
    for _, theirs, shape in weight_map(arch):
        found = next((a for a in _conv_aliases(theirs) if a in state), None)
        if found is None:
            raise BridgeError(f"nnU-Net state has no {theirs!r}")
        tensor = _checked(found, state[found], shape, "nnU-Net")
        for alias in _conv_aliases(theirs):
            out.setdefault(alias, tensor)
    return out


def _is_autoseg_state(state: Mapping[str, Any]) -> bool:
    keys = _unwrapped(state).keys()
    return any(k.startswith(("heads.", "upsample.")) for k in keys)


# --------------------------------------------------------------------------- files


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


def write_nnunet_splits(autoseg_splits: list[dict], path: Path) -> None:
    """autoseg ``splits.json`` -> nnU-Net ``splits_final.json``: the same folds, in order.

    Both are a list of ``{"train": [case ids], "val": [case ids]}``, and autoseg's case ids
    are nnU-Net's identifiers (the exported file names), so the folds are copied as they
    are, only other keys left out.
    """
    out = []
    for i, fold in enumerate(autoseg_splits):
        if not isinstance(fold, Mapping) or "train" not in fold or "val" not in fold:
            raise BridgeError(f"splits[{i}]: expected an object with 'train' and 'val' lists")
        out.append({"train": [str(c) for c in fold["train"]], "val": [str(c) for c in fold["val"]]})
    _write_json(Path(path), out)


def _other_folders(base: Path, dataset_id: int, keep: str) -> list[Path]:
    """Folders of another dataset with the same id: nnU-Net would refuse the id."""
    if not base.is_dir():
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return [p for p in base.iterdir() if p.name.startswith(prefix) and p.name != keep]


def _export(autoseg_dataset_dir: Path, nnunet_raw: Path, folder: str) -> Path:
    """autoseg's export into ``nnunet_raw/folder`` (replacing it), whatever the source id."""
    from autoseg.io.nnunet import export_nnunet

    staging = nnunet_raw / f".bridge-{uuid.uuid4().hex[:8]}"
    try:
        exported = export_nnunet(autoseg_dataset_dir, staging, overwrite=True, progress=False)
        target = nnunet_raw / folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(exported, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _merged_plans(path: Path, plans: dict[str, Any]) -> dict[str, Any]:
    """Keep other configurations of an existing plans file when its global fields agree, so
    that preparing a second configuration of a dataset does not drop the first."""
    if not path.is_file():
        return plans
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return plans
    same = {k: v for k, v in old.items() if k != "configurations"} == {
        k: v for k, v in plans.items() if k != "configurations"
    }
    if not same:
        return plans
    return {**plans, "configurations": {**old.get("configurations", {}), **plans["configurations"]}}


def prepare_nnunet_dataset(
    autoseg_dataset_dir: Path,
    nnunet_raw: Path,
    nnunet_preprocessed: Path,
    plan: dict,
    config: str,
    dataset_id: int,
    fingerprint: dict | None = None,
    plans_name: str = PLANS_NAME,
) -> str:
    """Export autoseg's raw dataset and write nnU-Net's plans for ``config``; returns the
    nnU-Net dataset folder name (``Dataset{dataset_id:03d}_{Name}``).

    Writes ``<nnunet_raw>/<folder>/`` (hard links, ``dataset.json`` with nnU-Net's keys) and
    ``<nnunet_preprocessed>/<folder>/{plans_name}.json, dataset.json,
    dataset_fingerprint.json``, so that ``nnUNetv2_preprocess -d ID -plans_name PLANS -c
    CONFIG`` and ``nnUNetv2_train ID CONFIG FOLD -p PLANS`` run autoseg's configuration.
    ``fingerprint`` defaults to ``<root>/preprocessed/<dataset>/fingerprint.json`` next to
    the raw dataset when it exists.
    """
    from autoseg.io import load_dataset_json
    from autoseg.paths import parse_dataset_folder

    src = Path(autoseg_dataset_dir)
    parsed = parse_dataset_folder(src.name)
    if parsed is None:
        raise BridgeError(f"{src}: not an autoseg dataset folder <NNN>_<Name>")
    if not 1 <= int(dataset_id) <= 999:
        raise BridgeError(f"dataset id {dataset_id}: nnU-Net accepts 1-999")
    folder = f"Dataset{int(dataset_id):03d}_{parsed[1]}"
    nnunet_raw, nnunet_preprocessed = Path(nnunet_raw), Path(nnunet_preprocessed)
    clashes = _other_folders(nnunet_raw, dataset_id, folder)
    clashes += _other_folders(nnunet_preprocessed, dataset_id, folder)
    if clashes:
        raise BridgeError(
            f"dataset id {dataset_id} is taken by {clashes[0]}; nnU-Net needs it unique"
        )
    file_ending = load_dataset_json(src).file_ending
    if file_ending not in SIMPLEITK_ENDINGS:
        raise BridgeError(f"file ending {file_ending!r}: expected one of {SIMPLEITK_ENDINGS}")
    if fingerprint is None:
        candidate = src.parent.parent / "preprocessed" / src.name / "fingerprint.json"
        if candidate.is_file():
            fingerprint = json.loads(candidate.read_text(encoding="utf-8"))
    plans = nnunet_plans_from_autoseg(plan, config, folder, fingerprint, plans_name)
    raw = _export(src, nnunet_raw, folder)
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    pre = nnunet_preprocessed / folder
    plans_path = pre / f"{plans_name}.json"
    _write_json(plans_path, _merged_plans(plans_path, plans))
    _write_json(pre / "dataset.json", dataset_json)
    _write_json(pre / "dataset_fingerprint.json", nnunet_fingerprint(plan, fingerprint))
    return folder


def write_nnunet_model(
    nnunet_results: Path,
    dataset_folder: str,
    nnunet_plans: dict,
    config: str,
    dataset_json: dict,
    fold_states: dict[int, Mapping[str, torch.Tensor]],
    trainer: str = TRAINER,
    mirror_axes: Sequence[int] | None = None,
) -> Path:
    """nnU-Net's results layout for weights trained elsewhere; returns the model folder.

    ``<results>/<dataset>/<trainer>__<plans_name>__<config>/{plans.json, dataset.json,
    fold_<k>/checkpoint_final.pth}``: what ``nnUNetv2_predict -d ID -c CONFIG -p PLANS -tr
    TRAINER -f 0 1 ...`` reads. ``fold_states`` maps a fold to its weights — nnU-Net's (from
    :func:`nnunet_state_dict`) or autoseg's own ``UNet`` state dict, converted here with the
    architecture of ``nnunet_plans``. Mirroring at inference covers ``mirror_axes`` (spatial
    axes of the network input; default every axis) — pass autoseg's
    ``predictor.trained_mirror_axes`` so that both systems' test-time augmentation is the same.
    """
    plans_name = nnunet_plans["plans_name"]
    cfg = nnunet_configuration(nnunet_plans, config)
    dim = len(cfg["patch_size"])
    folder = Path(nnunet_results) / dataset_folder / f"{trainer}__{plans_name}__{config}"
    _write_json(folder / "plans.json", nnunet_plans)
    _write_json(folder / "dataset.json", dict(dataset_json))
    for fold, state in sorted(fold_states.items()):
        deep = any(k.startswith("heads.1.") for k in _unwrapped(state))
        arch = autoseg_architecture(
            cfg["architecture"],
            in_channels=len(dataset_json["channel_names"]),
            num_classes=len(dataset_json["labels"]),
            deep_supervision=deep or not _is_autoseg_state(state),
        )
        if _is_autoseg_state(state):
            weights = nnunet_state_dict(state, arch)
        else:
            weights = _complete_nnunet_state(state, arch)
        checkpoint = {
            "network_weights": weights,
            "optimizer_state": None,
            "grad_scaler_state": None,
            "logging": None,
            "_best_ema": None,
            "current_epoch": 0,
            "init_args": {
                "plans": nnunet_plans,
                "configuration": config,
                "fold": fold,
                "dataset_json": dict(dataset_json),
                "device": torch.device("cpu"),
            },
            "trainer_name": trainer,
            "inference_allowed_mirroring_axes": tuple(
                range(dim) if mirror_axes is None else (int(a) for a in mirror_axes)
            ),
        }
        path = folder / f"fold_{fold}" / "checkpoint_final.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
    return folder
