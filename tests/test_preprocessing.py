"""Preprocessing: cropping, resampling, normalization, inversion, and the resumable driver."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

from autoseg.errors import AutosegError
from autoseg.io import DatasetJson, Geometry, read_image, write_image
from autoseg.io.atomic import TMP_MARK
from autoseg.preprocessing import (
    ChannelNormalization,
    PreprocessingParams,
    bounding_box,
    crop,
    crop_to_nonzero,
    invert_labels,
    invert_prediction,
    invert_probabilities,
    load_properties,
    normalize_image,
    paste,
    preprocess_case,
    preprocess_dataset,
    resample_image,
    resample_labels,
    sample_class_locations,
)
from autoseg.preprocessing import preprocess as pp
from autoseg.preprocessing.resampling import resample_array, thick_axis

ZSCORE = (ChannelNormalization("zscore"),)
RAW_ONLY = (ChannelNormalization("none"),)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def rotated_geometry(shape_zyx, spacing_zyx) -> Geometry:
    direction = sitk.VersorTransform((0.2, 0.1, 0.05), 0.3).GetMatrix()
    return Geometry(
        spacing=tuple(float(s) for s in reversed(spacing_zyx)),
        origin=(-12.5, 30.0, 7.25),
        direction=tuple(direction),
        size=tuple(reversed(shape_zyx)),
    )


def tube(shape, centre_yx, radius, z_range=None) -> np.ndarray:
    """A nerve-like cylinder along z (radius in voxels), uint8."""
    _, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    disc = (yy - centre_yx[0]) ** 2 + (xx - centre_yx[1]) ** 2 <= radius**2
    out = np.broadcast_to(disc, shape).astype(np.uint8)
    if z_range is not None:
        out[: z_range[0]] = 0
        out[z_range[1] :] = 0
    return out


def padded_image(shape, box, seed=0) -> np.ndarray:
    """(1, *shape) image: positive noise inside ``box``, exact zeros outside (scanner padding)."""
    img = np.zeros((1, *shape), np.float32)
    inner = tuple(slice(a, b) for a, b in box)
    rng = np.random.default_rng(seed)
    img[(0, *inner)] = rng.random(tuple(b - a for a, b in box)).astype(np.float32) + 1.0
    return img


# --------------------------------------------------------------------------------- cropping


def test_crop_box_is_the_nonzero_region_of_any_channel():
    img = np.zeros((2, 10, 12, 14), np.float32)
    img[0, 2:5, 3:9, 4:7] = 1.0
    img[1, 6, 1, 10] = -3.0  # another channel widens the box; negative counts as non-zero
    cropped, seg_c, box = crop_to_nonzero(img)
    assert box == [(2, 7), (1, 9), (4, 11)]
    assert cropped.shape == (2, 5, 8, 7) and seg_c is None
    assert np.count_nonzero(cropped) == np.count_nonzero(img)
    back = paste(cropped, box, img.shape[1:])
    np.testing.assert_array_equal(back, img)


def test_crop_keeps_full_extent_without_zero_background_and_keeps_labels():
    img = np.ones((1, 4, 5, 6), np.float32)
    assert crop_to_nonzero(img)[2] == [(0, 4), (0, 5), (0, 6)]
    assert bounding_box(np.zeros((3, 4), bool)) == [(0, 3), (0, 4)]  # all zero: full extent
    img = np.zeros((1, 8, 8, 8), np.float32)
    img[0, 2:4, 2:4, 2:4] = 5
    seg = np.zeros((8, 8, 8), np.uint8)
    seg[6, 6, 6] = 1  # an annotation in the zero padding is never cut off
    _, seg_c, box = crop_to_nonzero(img, seg)
    assert box == [(2, 7), (2, 7), (2, 7)] and seg_c.sum() == 1


def test_paste_fills_probabilities_per_channel():
    probs = np.full((3, 2, 2), 0.25, np.float32)
    out = paste(probs, [(1, 3), (0, 2)], (4, 3), fill=[1.0, 0.0, 0.0])
    assert out.shape == (3, 4, 3)
    assert out[0, 0, 0] == 1.0 and out[1, 0, 0] == 0.0 and out[2, 3, 2] == 0.0
    np.testing.assert_array_equal(crop(out, [(1, 3), (0, 2)]), probs)


# ------------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("order", [1, 3])
def test_separable_resampling_equals_scipy_zoom(order):
    rng = np.random.default_rng(1)
    a = ndi.gaussian_filter(rng.random((7, 20, 18)), 1.5).astype(np.float32)
    new_shape = (11, 15, 25)
    ours = resample_array(a, new_shape, (order,) * 3)
    zoom = [n / o for n, o in zip(new_shape, a.shape)]
    ref = ndi.zoom(a, zoom, order=order, mode="nearest", grid_mode=True)
    assert ours.shape == new_shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_thick_axis_rule():
    assert thick_axis((4.0, 0.5, 0.5), (4.0, 0.5, 0.5)) == 0
    assert thick_axis((1.0, 1.0, 1.0), (1.0, 1.2, 1.2)) is None
    assert thick_axis((1.0, 1.0, 1.0), (0.5, 0.5, 2.0)) == 2  # anisotropic target decides
    assert thick_axis((4.0, 4.0, 0.5), (4.0, 4.0, 0.5)) is None  # two thick axes: no plane


def test_anisotropic_data_uses_nearest_along_the_thick_axis():
    # Slices alternate between two grey values and are constant in-plane: cubic interpolation
    # across slices would create values in between (and overshoot); nearest cannot.
    values = np.array([0.0, 10.0] * 5, np.float32)
    img = np.broadcast_to(values[:, None, None], (10, 16, 16))[None].copy()
    aniso = resample_image(img, (13, 20, 20), (4.0, 0.5, 0.5), (3.0, 0.4, 0.4))
    assert set(np.unique(np.round(aniso, 4))) <= {0.0, 10.0}
    # each output slice is a copy of its nearest input slice
    src = (np.floor((np.arange(13) + 0.5) * 10 / 13)).astype(int)
    np.testing.assert_allclose(aniso[0, :, 0, 0], values[src], atol=1e-4)
    # control: the same pattern at isotropic spacing is interpolated with order 3
    iso = resample_image(img, (13, 20, 20), (1.0, 1.0, 1.0), (0.77, 0.8, 0.8))
    assert len(np.unique(np.round(iso, 3))) > 3 and iso.max() > 10.0  # cubic overshoot
    # the plan can force the thick axis even when the rule would not pick one
    forced = resample_image(img, (13, 16, 16), (1.0, 1.0, 1.0), (0.77, 1.0, 1.0), thick=0)
    assert set(np.unique(np.round(forced, 4))) <= {0.0, 10.0}


def test_in_plane_is_cubic_slice_by_slice_on_anisotropic_data():
    rng = np.random.default_rng(3)
    img = ndi.gaussian_filter(rng.random((1, 6, 20, 20)), (0, 0, 2, 2)).astype(np.float32)
    out = resample_image(img, (6, 27, 27), (4.0, 0.5, 0.5), (4.0, 0.37, 0.37))
    for z in (0, 5):
        ref = ndi.zoom(img[0, z], 27 / 20, order=3, mode="nearest", grid_mode=True)
        np.testing.assert_allclose(out[0, z], ref, atol=2e-5)


def test_tiny_nerve_survives_downsampling_with_linear_one_hot():
    # A 1 mm-wide nerve (3 voxels at 0.5 mm) halved to 1 mm voxels: the one-hot maps are
    # 0.25-0.5 everywhere, a tie with background that goes to the nerve; nearest neighbour
    # samples between the nerve voxels and loses it in every slice.
    seg = np.zeros((4, 40, 40), np.uint8)
    seg[:, 20, 19:22] = 1
    seg[:, 19:22, 20] = 1
    linear = resample_labels(seg, (4, 20, 20), (1.0, 0.5, 0.5), (1.0, 1.0, 1.0), order=1)
    nearest = resample_labels(seg, (4, 20, 20), (1.0, 0.5, 0.5), (1.0, 1.0, 1.0), order=0)
    assert all(linear[z].any() for z in range(4))
    assert not nearest.any()


def test_nerve_three_voxels_wide_survives_an_anisotropic_round_trip():
    shape = (16, 64, 64)
    seg = tube(shape, (30.3, 33.6), 1.5, z_range=(2, 14))  # ~3 voxels = 1.5 mm wide
    img = padded_image(shape, [(0, 16), (0, 64), (0, 64)])
    geo = Geometry.default(shape, (4.0, 0.5, 0.5))
    params = PreprocessingParams("x", (3.0, 0.7, 0.7), ZSCORE)
    res = preprocess_case(img, geo, params, seg=seg)
    present = [z for z in range(res.seg.shape[0]) if res.seg[z].any()]
    assert len(present) >= 15  # 12 slices of 4 mm = 48 mm = 16 slices of 3 mm
    assert present == list(range(present[0], present[-1] + 1))  # no gap along the nerve
    back, _ = invert_labels(res.seg, res.properties)
    assert all(back[z].any() for z in range(2, 14))
    assert dice(back, seg) >= 0.85


def test_labels_resample_to_exactly_one_label_per_voxel():
    seg = np.zeros((6, 30, 30), np.uint8)
    seg[:, 5:15, 5:15] = 1
    seg[:, 14:25, 14:25] = 2  # touching labels: no holes or overlaps at the border
    out = resample_labels(seg, (6, 41, 41), (1.0, 1.0, 1.0), (1.0, 0.73, 0.73))
    assert set(np.unique(out)) == {0, 1, 2}
    assert out.dtype == np.uint8
    # the union of both labels resampled together equals the union resampled alone
    union = resample_labels((seg > 0).astype(np.uint8), (6, 41, 41), (1, 1, 1), (1, 0.73, 0.73))
    assert dice(out > 0, union) > 0.99


# ---------------------------------------------------------------------------- normalization


def test_zscore_and_masked_zscore_numbers():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 4, 20, 20), np.float32)
    img[0, :, 5:15, 5:15] = rng.normal(300.0, 40.0, (4, 10, 10))
    out, used = normalize_image(img, [ChannelNormalization("zscore")])
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1.0) < 1e-4
    assert used[0]["mean"] == pytest.approx(float(img.mean()), rel=1e-6)
    mask = img[0] != 0
    out, used = normalize_image(img, [ChannelNormalization("zscore", use_nonzero_mask=True)], mask)
    inside = out[0][mask]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1.0) < 1e-4
    assert np.all(out[0][~mask] == 0.0)
    assert used[0]["mean"] == pytest.approx(float(img[0][mask].mean()), rel=1e-6)


def test_ct_normalization_clips_then_uses_dataset_numbers():
    img = np.array([[[[-2000.0, -100.0, 40.0, 500.0, 3000.0]]]], np.float32)
    norm = ChannelNormalization("ct", clip=(-100.0, 500.0), mean=50.0, std=100.0)
    out, used = normalize_image(img, [norm])
    np.testing.assert_allclose(out.ravel(), [-1.5, -1.5, -0.1, 4.5, 4.5], atol=1e-6)
    assert used[0]["scheme"] == "ct" and used[0]["clip"] == [-100.0, 500.0]
    with pytest.raises(AutosegError):
        ChannelNormalization("ct", clip=(0.0, 1.0))  # no mean/std
    with pytest.raises(AutosegError):
        normalize_image(np.zeros((2, 1, 2, 2), np.float32), [norm])  # channel count


# ------------------------------------------------------------------------ class locations


def test_class_locations_lie_inside_their_label_and_are_capped():
    seg = np.zeros((10, 50, 50), np.uint8)
    seg[2:8, 10:40, 10:40] = 1  # 5400 voxels
    seg[5, 45, 45] = 2
    locs = sample_class_locations(seg, [1, 2, 3], max_per_label=1000, seed=7)
    assert set(locs) == {"1", "2", "3"}
    assert locs["1"].shape == (1000, 3) and locs["1"].dtype == np.int32
    assert len({tuple(p) for p in locs["1"]}) == 1000  # without replacement
    assert np.all(seg[tuple(locs["1"].T)] == 1)
    np.testing.assert_array_equal(locs["2"], [[5, 45, 45]])
    assert locs["3"].shape == (0, 3)
    again = sample_class_locations(seg, [1, 2, 3], max_per_label=1000, seed=7)
    np.testing.assert_array_equal(locs["1"], again["1"])


# ---------------------------------------------------------------------- round trips (pure)


def _round_trip(img, seg, geo, target):
    res = preprocess_case(img, geo, PreprocessingParams("x", target, ZSCORE), seg=seg)
    back, back_geo = invert_labels(res.seg, res.properties)
    assert back.shape == seg.shape and back.dtype == np.uint8
    assert back_geo == geo  # exact: size, spacing, origin, direction
    return res, back


def test_round_trip_isotropic_3d():
    shape = (40, 44, 48)
    zz, yy, xx = np.ogrid[:40, :44, :48]
    seg = (((zz - 19.6) ** 2 + (yy - 22.3) ** 2 + (xx - 25.1) ** 2) <= 12.5**2).astype(np.uint8)
    img = padded_image(shape, [(3, 37), (4, 41), (2, 47)])
    geo = Geometry.default(shape, (1.0, 1.0, 1.0))
    res, back = _round_trip(img, seg, geo, (0.8, 0.8, 0.8))
    assert res.properties["crop_bbox"] == [[3, 37], [4, 41], [2, 47]]
    assert res.properties["thick_axis"] is None
    assert dice(back, seg) >= 0.99


def test_round_trip_anisotropic_3d_with_rotated_direction_and_origin():
    shape = (14, 70, 64)
    seg = tube(shape, (35.2, 30.7), 12.0, z_range=(2, 12))
    seg[tube(shape, (35.2, 30.7), 6.0, z_range=(2, 12)) > 0] = 2  # a second label inside
    img = padded_image(shape, [(1, 13), (5, 66), (3, 60)])
    geo = rotated_geometry(shape, (4.0, 0.5, 0.5))
    res, back = _round_trip(img, seg, geo, (3.0, 0.4, 0.4))
    assert res.properties["thick_axis"] == 0
    assert res.properties["original_spacing"] == [4.0, 0.5, 0.5]
    assert dice(back > 0, seg > 0) >= 0.99
    for label in (1, 2):  # label 2 is 12 voxels wide: a voxel of boundary costs ~1 %
        assert dice(back == label, seg == label) >= 0.98
    # probabilities path: a one-hot prediction goes back linearly, background 1 outside
    probs = np.stack([res.seg == k for k in range(3)]).astype(np.float32)
    inv, inv_geo = invert_probabilities(probs, res.properties)
    assert inv.shape == (3, *shape) and inv_geo == geo
    assert np.all(inv[0, 0] == 1.0) and np.all(inv[1:, 0] == 0.0)  # slice 0 is outside the crop
    np.testing.assert_allclose(inv.sum(axis=0), 1.0, atol=1e-5)
    labels, _ = invert_prediction(probs, res.properties)
    assert dice(labels > 0, seg > 0) >= 0.99


def test_round_trip_anisotropic_downsampling_loses_only_the_boundary():
    # 0.5 -> 0.7 mm in-plane throws information away; the round trip is no longer exact but
    # a sciatic-sized nerve (10 mm = 20 voxels wide) keeps Dice > 0.95.
    shape = (12, 64, 64)
    seg = tube(shape, (31.4, 32.8), 10.0)
    img = padded_image(shape, [(0, 12), (0, 64), (0, 64)])
    geo = Geometry.default(shape, (4.0, 0.5, 0.5))
    _, back = _round_trip(img, seg, geo, (3.0, 0.7, 0.7))
    assert dice(back, seg) >= 0.95


def test_round_trip_2d():
    shape = (60, 50)
    yy, xx = np.ogrid[:60, :50]
    seg = ((yy - 30.2) ** 2 + (xx - 24.6) ** 2 <= 11**2).astype(np.uint8)
    img = np.zeros((1, *shape), np.float32)
    img[0, 4:56, :] = np.random.default_rng(0).random((52, 50)) + 1  # black bands at the top
    geo = Geometry(
        spacing=(0.12, 0.1), origin=(3.0, -2.0), direction=(1.0, 0, 0, 1.0), size=(50, 60)
    )
    res = preprocess_case(img, geo, PreprocessingParams("x", (0.08, 0.09), ZSCORE), seg=seg)
    assert res.data.shape[:2] == (1, 1) and res.seg.shape[0] == 1  # stored with Z = 1
    assert res.properties["was_2d"] and res.properties["crop_bbox"] == [[4, 56], [0, 50]]
    assert res.properties["thick_axis"] is None
    back, back_geo = invert_labels(res.seg, res.properties)
    assert back.shape == shape and back_geo == geo
    assert dice(back, seg) >= 0.99


def test_invert_rejects_a_prediction_of_the_wrong_shape():
    img = padded_image((4, 10, 10), [(0, 4), (0, 10), (0, 10)])
    res = preprocess_case(
        img, Geometry.default((4, 10, 10)), PreprocessingParams("x", (1, 1, 1), ZSCORE)
    )
    with pytest.raises(ValueError, match="prediction shape"):
        invert_labels(np.zeros((4, 10, 9), np.uint8), res.properties)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "sct_testing").is_dir(), reason="shared data absent")
def test_round_trip_real_anisotropic_mri():
    # Spinal-cord grey matter at 0.5 x 0.5 x 7.5 mm: a butterfly a few voxels wide (697 voxels).
    d = SHARED / "sct_testing" / "t2s"
    img, geo, seg = pp.read_case(
        [d / "t2s_uncropped.nii.gz"], d / "t2s_uncropped_gmseg_manual.nii.gz"
    )
    for target, min_dice in (((7.5, 0.4, 0.4), 0.97), ((5.0, 0.6, 0.6), 0.85)):
        res = preprocess_case(img, geo, PreprocessingParams("x", target, ZSCORE), seg=seg)
        assert res.properties["thick_axis"] == 0
        back, back_geo = invert_labels(res.seg, res.properties)
        assert back_geo == geo and back.shape == seg.shape
        assert dice(back, seg) >= min_dice
        assert [z for z in range(seg.shape[0]) if back[z].any()] == [
            z for z in range(seg.shape[0]) if seg[z].any()
        ]


# ------------------------------------------------------------------------------ the driver

DS = "001_Test"


def _make_plan(target, configs: dict[str, dict], dim: int = 3, thick: int | None = None):
    from autoseg.planning.plan import (
        ConfigurationPlan,
        DeviceInfo,
        FingerprintSummary,
        Normalization,
        Plan,
        Resampling,
        Schedule,
    )
    from autoseg.planning.topology import architecture_block, fit_topology

    confs = {}
    for name, c in configs.items():
        patch, topo = fit_topology(c["spacing"], c["patch"])
        arch = architecture_block(topo, network="unet", in_channels=1, num_classes=3)
        confs[name] = ConfigurationPlan(
            dim=len(c["spacing"]),
            spacing=list(c["spacing"]),
            median_shape=list(patch),
            patch_size=list(patch),
            batch_size=2,
            architecture=arch,
            slice_axis=c.get("slice_axis"),
            augmentation="3d" if len(c["spacing"]) == 3 else "2d",
        )
    resampling = (
        Resampling(thick_axis=None)
        if thick is None
        else Resampling(thick, image_order_thick_axis=0, label_order_thick_axis=0)
    )
    return Plan(
        dataset=DS,
        created_by="test",
        created_at="2025-01-01T00:00:00",
        fingerprint=FingerprintSummary(
            sha256="0" * 64,
            dim=dim,
            n_cases=3,
            modality={"0": "mri"},
            spacing_median=list(target),
            shape_after_crop_median=[8] * dim,
            anisotropy_ratio=max(target) / min(target),
            foreground_fraction_median=0.01,
            foreground_extent_p95_mm=None,
            cases_without_foreground=0,
        ),
        device=DeviceInfo(type="cpu", name=None, gpu_memory_gb=8.0, source="default"),
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1, "vessel": 2},
        normalization={"0": Normalization("zscore")},
        target_spacing=list(target),
        resampling=resampling,
        configurations=confs,
        schedule=Schedule(),
    )


def make_dataset(tmp_path, n_cases=3, with_lowres=False):
    """A tiny anisotropic MRI-like dataset plus a plan written through the planner's API."""
    from autoseg.planning.plan import save_plan

    root = tmp_path / "root"
    raw = root / "raw" / DS
    for i in range(n_cases):
        shape = (8, 30 + 2 * i, 28)
        spacing = (4.0, 0.5 + 0.05 * i, 0.5)
        img = padded_image(shape, [(1, 7), (2, shape[1] - 2), (0, 28)], seed=i)[0] * 100
        seg = tube(shape, (shape[1] / 2, 14.3), 4.0, z_range=(2, 6))
        seg[3, 5:7, 3:5] = 2
        geo = rotated_geometry(shape, spacing)
        write_image(raw / "imagesTr" / f"case{i}_0000.nii.gz", img.astype(np.int16), geo)
        write_image(raw / "labelsTr" / f"case{i}.nii.gz", seg, geo)
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1, "vessel": 2},
        num_training=n_cases,
        file_ending=".nii.gz",
    ).save(raw)
    target = (4.0, 0.5, 0.5)
    configs = {
        "3d_fullres": {"spacing": target, "patch": (8, 32, 32)},
        "2d": {"spacing": target[1:], "patch": (32, 32), "slice_axis": 0},
    }
    if with_lowres:
        configs["3d_lowres"] = {"spacing": (4.0, 1.0, 1.0), "patch": (8, 16, 16)}
    save_plan(_make_plan(target, configs, thick=0), root / "preprocessed" / DS / "plans.json")
    return root


def folder_snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_params_from_plan_share_full_resolution_data(tmp_path):
    from autoseg.planning.plan import load_plan

    root = make_dataset(tmp_path, n_cases=1, with_lowres=True)
    plan = load_plan(root / "preprocessed" / DS)
    params = pp.params_from_plan(plan)
    by_id = {p.data_identifier: p for p in params}
    assert set(by_id) == {"fullres", "spacing_4x1x1"}
    assert set(by_id["fullres"].configurations) == {"3d_fullres", "2d"}
    assert by_id["fullres"].spacing == (4.0, 0.5, 0.5)
    assert by_id["fullres"].thick_axis == 0 and by_id["fullres"].image_order_thick == 0
    with pytest.raises(AutosegError, match="not in the plan"):
        pp.params_from_plan(plan, ["3d_cascade"])


def test_with_the_real_fingerprint_and_planner(tmp_path):
    from autoseg.fingerprint import extract_fingerprint
    from autoseg.planning import plan_dataset, save_plan

    root = make_dataset(tmp_path)
    raw = root / "raw" / DS
    fp = extract_fingerprint(raw, num_workers=1, progress=False)
    plan = plan_dataset(fp, gpu_memory_gb=8.0, estimator=lambda arch, patch, batch: 0.1)
    save_plan(plan, root / "preprocessed" / DS / "plans.json")
    folders = preprocess_dataset(DS, root, num_workers=1, progress=False)
    for name in plan.configurations:
        folder = root / "preprocessed" / DS / pp.data_identifier(plan, name)
        assert folder in folders and (folder / "manifest.json").is_file()
        props = load_properties(folder / "case1.json")
        assert props["target_spacing"] == pytest.approx(list(pp.data_spacing(plan, name)))
    full = root / "preprocessed" / DS / pp.data_identifier(plan, "3d_fullres")
    assert full.name == "fullres"
    assert load_properties(full / "case1.json")["target_spacing"] == plan.target_spacing


def test_preprocess_dataset_writes_the_format_and_inverts_to_the_original(tmp_path):
    root = make_dataset(tmp_path, with_lowres=True)
    folders = preprocess_dataset(DS, root, num_workers=1, progress=False)
    assert [f.name for f in folders] == ["fullres", "spacing_4x1x1"]
    full = folders[0]
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["cases"] == ["case0", "case1", "case2"]
    assert set(manifest["configurations"]) == {"3d_fullres", "2d"}
    raw = root / "raw" / DS
    for i in range(3):
        data = np.load(full / f"case{i}.npy", mmap_mode="r")
        seg = np.load(full / f"case{i}_seg.npy", mmap_mode="r")
        props = load_properties(full / f"case{i}.json")
        assert data.dtype == np.float32 and seg.dtype == np.uint8
        assert data.shape[1:] == seg.shape == tuple(props["shape_after_resampling"])
        with np.load(full / f"case{i}_locations.npz") as z:
            assert set(z.files) == {"1", "2"}
            assert np.all(seg[tuple(z["1"].T)] == 1) and np.all(seg[tuple(z["2"].T)] == 2)
        # invert, write with the returned geometry, compare with the raw label file
        original = read_image(raw / "labelsTr" / f"case{i}.nii.gz")
        back, geo = invert_labels(np.asarray(seg), props)
        out = write_image(tmp_path / f"pred{i}.nii.gz", back, geo)
        again = read_image(out)
        assert again.geometry == original.geometry  # exact, as read from the files
        assert dice(again.array == 1, original.array == 1) >= 0.98
    low = np.load(folders[1] / "case0.npy")
    assert low.shape[2] < np.load(full / "case0.npy").shape[2]  # 1 mm in-plane: fewer voxels
    assert not list(full.glob(f"{TMP_MARK}*"))


def test_rerun_skips_finished_cases_and_is_idempotent(tmp_path):
    root = make_dataset(tmp_path)
    (full,) = preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in full.iterdir() if p.name != "manifest.json"}
    snap = folder_snapshot(full)
    preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in full.iterdir() if p.name != "manifest.json"}
    assert before == after  # nothing rewritten
    assert folder_snapshot(full) == snap
    # a changed plan field (normalization) makes every case stale -> recomputed
    plan_path = root / "preprocessed" / DS / "plans.json"
    d = json.loads(plan_path.read_text())
    d["normalization"]["0"]["use_nonzero_mask"] = True
    plan_path.write_text(json.dumps(d))
    preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    props = load_properties(full / "case0.json")
    assert props["normalization"][0]["use_nonzero_mask"] is True
    assert (full / "case0.npy").stat().st_mtime_ns != before["case0.npy"]


def test_crash_mid_run_leaves_no_partial_file_and_rerun_completes(tmp_path, monkeypatch):
    root = make_dataset(tmp_path, n_cases=4)
    real = pp.preprocess_case
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(pp, "preprocess_case", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    full = root / "preprocessed" / DS / "fullres"
    names = {p.name for p in full.iterdir()}
    assert not [n for n in names if n.startswith(TMP_MARK)]
    assert "manifest.json" not in names
    for i in range(4):  # finished cases are complete, the others absent
        files = {f"case{i}.npy", f"case{i}_seg.npy", f"case{i}_locations.npz", f"case{i}.json"}
        assert files <= names if i < 2 else not (files & names)
    # a kill during a write leaves a temporary file: the next run removes it
    (full / f"{TMP_MARK}dead.case2.npy").write_bytes(b"half")
    monkeypatch.setattr(pp, "preprocess_case", real)
    done_mtime = (full / "case0.npy").stat().st_mtime_ns
    preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    assert (full / "case0.npy").stat().st_mtime_ns == done_mtime
    assert not list(full.glob(f"{TMP_MARK}*"))
    assert json.loads((full / "manifest.json").read_text())["cases"] == [
        f"case{i}" for i in range(4)
    ]


def test_parallel_equals_serial(tmp_path):
    root = make_dataset(tmp_path)
    (serial,) = preprocess_dataset(DS, root, configs=["2d"], num_workers=1, progress=False)
    snap = folder_snapshot(serial)
    preprocess_dataset(DS, root, configs=["2d"], num_workers=2, overwrite=True, progress=False)
    assert folder_snapshot(serial) == snap


def test_stale_cases_are_removed(tmp_path):
    root = make_dataset(tmp_path)
    (full,) = preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    raw = root / "raw" / DS
    (raw / "labelsTr" / "case2.nii.gz").unlink()
    (raw / "imagesTr" / "case2_0000.nii.gz").unlink()
    preprocess_dataset(DS, root, configs=["3d_fullres"], num_workers=1, progress=False)
    assert not list(full.glob("case2*"))


def test_bad_input_is_a_clean_error(tmp_path):
    root = make_dataset(tmp_path, n_cases=2)
    raw = root / "raw" / DS
    seg = np.zeros((8, 31, 28), np.uint8)  # wrong grid
    write_image(raw / "labelsTr" / "case0.nii.gz", seg, Geometry.default(seg.shape))
    with pytest.raises(AutosegError, match="label grid differs"):  # raised in a worker
        preprocess_dataset(DS, root, num_workers=2, progress=False)
    (raw / "imagesTr" / "case0_0000.nii.gz").unlink()
    with pytest.raises(AutosegError, match="lacks a file"):
        preprocess_dataset(DS, root, num_workers=1, progress=False)


def test_2d_png_dataset(tmp_path):
    from autoseg.planning.plan import save_plan

    root = tmp_path / "root"
    raw = root / "raw" / DS
    rng = np.random.default_rng(0)
    for i in range(2):
        img = (rng.random((40, 36)) * 200 + 20).astype(np.uint8)
        img[:5] = 0  # the black band of an ultrasound frame
        seg = np.zeros((40, 36), np.uint8)
        seg[15:25, 10:20] = 1
        seg[30:34, 25:30] = 2
        write_image(raw / "imagesTr" / f"us{i}_0000.png", img, Geometry.default(img.shape))
        write_image(raw / "labelsTr" / f"us{i}.png", seg, Geometry.default(seg.shape))
    DatasetJson({"0": "US"}, {"background": 0, "nerve": 1, "vessel": 2}, 2, ".png").save(raw)
    plan = _make_plan((1.0, 1.0), {"2d": {"spacing": (1.0, 1.0), "patch": (32, 32)}}, dim=2)
    save_plan(plan, root / "preprocessed" / DS / "plans.json")
    (folder,) = preprocess_dataset(DS, root, num_workers=1, progress=False)
    assert folder.name == "fullres"
    data = np.load(folder / "us0.npy")
    assert data.shape == (1, 1, 35, 36)  # Z = 1; the 5 black rows are cropped
    props = load_properties(folder / "us0.json")
    back, geo = invert_labels(np.load(folder / "us0_seg.npy"), props)
    original = read_image(raw / "labelsTr" / "us0.png")
    np.testing.assert_array_equal(back, original.array)
    assert geo == original.geometry


def test_cli(tmp_path, monkeypatch, capsys):
    from autoseg.cli import preprocess as cli

    root = make_dataset(tmp_path, n_cases=1)
    monkeypatch.setenv("AUTOSEG_ROOT", os.fspath(root))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["preprocess", DS, "--configs", "2d", "--workers", "1", "--no-progress"]
    )
    assert args.func(args) == 0
    assert "fullres" in capsys.readouterr().out
    assert (root / "preprocessed" / DS / "fullres" / "manifest.json").is_file()
