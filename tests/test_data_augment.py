"""Augmentation: image and mask stay aligned, labels stay labels, in-plane means in-plane, and
the MRI/ultrasound transforms do what they claim."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from autoseg.data import LoaderConfig, build_loader
from autoseg.data.augment import (
    DEFAULT_PROFILE,
    NO_AUGMENTATION,
    BiasFieldTransform,
    BlurTransform,
    LowResolutionTransform,
    NoiseTransform,
    SpeckleTransform,
    add_ghosts,
    bias_field,
    draw_warp,
    elastic_alpha,
    get_profile,
    shift_kspace_lines,
    simulate_low_resolution,
    spatial_settings,
)
from autoseg.data.dataset import write_case_arrays
from autoseg.data.sampler import elastic_displacement_bound
from autoseg.errors import AutosegError

SPATIAL_ONLY = replace(
    NO_AUGMENTATION,
    name="spatial",
    p_rotation=1.0,
    p_zoom=1.0,
    p_elastic=1.0,
    mirror_axes=(0, 1, 2),
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def _square_case(folder, shape, value=10.0):
    """Bright square (label 1) and a brighter small square (label 2) on a dark background."""
    z, y, x = shape
    img = np.zeros((1, z, y, x), np.float32)
    seg = np.zeros(shape, np.uint8)
    sl = (slice(None), slice(y // 3, 2 * y // 3), slice(x // 3, 2 * x // 3))
    seg[sl] = 1
    seg[:, y // 3 : y // 3 + 6, x // 3 : x // 3 + 6] = 2
    img[0][seg == 1] = value
    img[0][seg == 2] = 2 * value
    write_case_arrays(folder, "sq", img, seg)


def _check_aligned(batch, min_dice):
    data, target = batch["data"], batch["target"]
    assert target.dtype == np.uint8 and data.dtype == np.float32
    assert set(np.unique(target)) <= {0, 1, 2}
    for i in range(data.shape[0]):
        d, t = data[i, 0], target[i, 0]
        if not t.any() or t.all():
            continue
        thr = (np.median(d[t == 0]) + np.median(d[t > 0])) / 2
        assert _dice(d > thr, t > 0) >= min_dice, i


@pytest.mark.parametrize(
    "profile,min_dice", [(SPATIAL_ONLY, 0.95), ("mri", 0.85), ("ultrasound", 0.85)]
)
def test_2d_image_and_mask_stay_aligned(tmp_path, profile, min_dice):
    _square_case(tmp_path, (1, 96, 96))
    cfg = LoaderConfig(
        dim=2, patch_size=(64, 64), batch_size=12, augmentation=profile, oversample_foreground=1.0
    )
    with build_loader(tmp_path, None, cfg, seed=4) as loader:
        for _ in range(3):
            _check_aligned(next(loader), min_dice)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_3d_image_and_mask_stay_aligned(tmp_path, anisotropic):
    _square_case(tmp_path, (16, 48, 48))
    cfg = LoaderConfig(
        dim=3,
        patch_size=(8, 32, 32),
        batch_size=4,
        augmentation=SPATIAL_ONLY,
        anisotropic=anisotropic,
        oversample_foreground=1.0,
    )
    with build_loader(tmp_path, None, cfg, seed=2) as loader:
        for _ in range(2):
            b = next(loader)
            assert b["data"].shape == (4, 1, 8, 32, 32)
            for i in range(4):
                d, t = b["data"][i, 0], b["target"][i, 0]
                assert _dice(d > 5, t > 0) >= 0.9


def test_in_plane_augmentation_never_mixes_thick_slices(tmp_path):
    """Anisotropic 3D with the thick axis last; thick slice k holds 10**k. In-plane warps may
    blend a slice with zero padding (values in about [-0.15, 1.15] x 10**k) but any blending
    with a neighbouring slice would show a value 10x too large or small."""
    values = 10.0 ** np.arange(6, dtype=np.float32)
    img = np.broadcast_to(values, (1, 40, 40, 6)).copy()
    seg = np.zeros((40, 40, 6), np.uint8)
    seg[10:30, 10:30, :] = 1
    write_case_arrays(tmp_path, "aniso", img, seg)
    cfg = LoaderConfig(
        dim=3,
        patch_size=(24, 24, 4),
        batch_size=4,
        anisotropic=True,
        thick_axis=2,
        augmentation=SPATIAL_ONLY,
    )
    with build_loader(tmp_path, None, cfg, seed=0) as loader:
        for _ in range(3):
            b = next(loader)
            assert b["data"].shape == (4, 1, 24, 24, 4)
            for i in range(4):
                peaks = np.abs(b["data"][i, 0]).max(axis=(0, 1))
                peaks = peaks[peaks > 0]  # foreground-centred patches may pad the thick axis
                assert len(peaks) >= 2
                powers = np.round(np.log10(peaks)).astype(int)
                np.testing.assert_allclose(peaks, 10.0**powers, rtol=0.15)
                steps = set(np.diff(powers))
                assert steps in ({1}, {-1})  # consecutive slices (mirroring may reverse them)


def test_ultrasound_profile_keeps_depth_direction(tmp_path):
    """Probe side stays at the top: no vertical flips, rotation within +-30 degrees."""
    img = np.zeros((1, 1, 128, 128), np.float32)
    img[0, 0, :64] = 1.0  # bright near field
    img[0, 0, 64:] = -1.0
    seg = np.zeros((1, 128, 128), np.uint8)
    seg[0, 60:68, 60:68] = 1
    write_case_arrays(tmp_path, "us", img, seg)
    cfg = LoaderConfig(
        dim=2,
        patch_size=(96, 96),
        batch_size=16,
        augmentation="ultrasound",
        oversample_foreground=1.0,
    )
    with build_loader(tmp_path, None, cfg, seed=9) as loader:
        for _ in range(3):
            d = next(loader)["data"][:, 0]
            assert (d[:, :20].mean(axis=(1, 2)) > d[:, -20:].mean(axis=(1, 2))).all()


def test_profiles_and_aliases():
    assert get_profile("MR").name == "mri"
    assert get_profile("us").name == "ultrasound"
    assert get_profile(None) is DEFAULT_PROFILE
    assert get_profile("mri").p_ghosting > 0 and get_profile("ultrasound").p_speckle > 0
    assert get_profile("ultrasound").mirror_axes == (2,)
    with pytest.raises(AutosegError, match="unknown augmentation profile"):
        get_profile("fancy")


def test_elastic_alpha_inverts_the_bound():
    for dim in (2, 3):
        alpha = elastic_alpha(3.0, 9.0, dim)
        assert elastic_displacement_bound(alpha, 9.0, dim, n_std=1.0) == pytest.approx(3.0)
    assert 150 < elastic_alpha(3.0, 9.0, 2) < 250 and 800 < elastic_alpha(3.0, 9.0, 3) < 1100


# --------------------------------------------------------------------------- own transforms
def test_ghosts_appear_at_fov_over_period():
    x = np.zeros((1, 64, 64), np.float32)
    x[0, 10, 20] = 1.0
    out = add_ghosts(x, period=4, strength=1.0, axis=-2)
    ghost = 1.0 / 4 - 1.0 / 64  # copies of amplitude s/n, minus the untouched DC line
    for k in (1, 2, 3):
        assert out[0, (10 + 16 * k) % 64, 20] == pytest.approx(ghost, abs=1e-5)
    assert out[0, 10, 20] == pytest.approx(1 + ghost, abs=1e-5)
    assert np.abs(np.delete(out[0], 20, axis=1)).max() < 1e-6  # other columns untouched
    assert out[0, 11, 20] == pytest.approx(-1.0 / 64, abs=1e-5)
    np.testing.assert_allclose(add_ghosts(x, 4, 0.0, -1), x, atol=1e-6)


def test_kspace_line_shift_is_a_translation_when_all_lines_move():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 32, 40)).astype(np.float32)
    moved = shift_kspace_lines(x, (3.0, -2.0), pe_axis=0, fraction=1.0)
    np.testing.assert_allclose(moved, np.roll(x, (3, -2), axis=(-2, -1)), atol=1e-4)
    np.testing.assert_allclose(shift_kspace_lines(x, (3.0, 1.0), 1, 0.0), x, atol=1e-5)
    part = shift_kspace_lines(x, (3.0, 0.0), pe_axis=1, fraction=0.3)
    assert not np.allclose(part, x, atol=1e-3) and not np.allclose(part, moved, atol=1e-3)


def test_bias_field_is_smooth_positive_and_bounded():
    coeffs = np.full(19, 0.3)  # 19 terms: 3D, order 3
    f = bias_field((8, 32, 32), coeffs, 3)
    assert f.shape == (8, 32, 32) and (f > 0).all()
    assert f.max() <= math.exp(0.3 * 19) and f.min() >= math.exp(-0.3 * 19)
    assert np.abs(np.diff(np.log(f), axis=2)).max() < 0.3  # smooth: small neighbour steps
    np.testing.assert_allclose(bias_field((4, 5), np.zeros(9), 3), 1.0)
    with pytest.raises(ValueError):
        bias_field((4, 5), np.zeros(3), 3)


def test_bias_and_speckle_keep_background_and_labels():
    rng = np.random.default_rng(1)
    data = rng.uniform(1, 2, size=(2, 1, 4, 32, 32)).astype(np.float32)
    data[:, :, :, :4, :4] = 0.0  # background at the minimum
    seg = np.zeros((2, 1, 4, 32, 32), np.float32)
    seg[:, :, :, 10:20, 10:20] = 1
    np.random.seed(0)
    for t in (BiasFieldTransform(p_per_sample=1.0), SpeckleTransform(p_per_sample=1.0)):
        out = t(data=data.copy(), seg=seg.copy())
        assert not np.allclose(out["data"], data)
        np.testing.assert_array_equal(out["data"][:, :, :, :4, :4], 0.0)  # minimum stays
        np.testing.assert_array_equal(out["seg"], seg)
        ratio = out["data"][:, :, :, 8:, 8:].mean() / data[:, :, :, 8:, 8:].mean()
        assert 0.6 < ratio < 1.6


def test_augmentation_is_reproducible_and_leaves_global_rng_alone(tmp_path):
    _square_case(tmp_path, (1, 64, 64))
    cfg = LoaderConfig(dim=2, patch_size=(48, 48), batch_size=4, augmentation="mri")
    np.random.seed(123)
    import random

    random.seed(7)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(7)
    runs = []
    for _ in range(2):
        with build_loader(tmp_path, None, cfg, seed=11) as loader:
            runs.append([next(loader) for _ in range(3)])
    after = (np.random.random(), random.random())
    assert before == after  # the loader used private random states
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["target"], b["target"])
    with build_loader(tmp_path, None, cfg, seed=12) as loader:
        other = next(loader)
    assert not np.array_equal(other["data"], runs[0][0]["data"])


def test_warp_probabilities_follow_the_profile():
    profile = replace(
        NO_AUGMENTATION, p_rotation=0.2, p_zoom=0.3, p_elastic=0.5, mirror_axes=(1, 2)
    )
    settings = spatial_settings(profile, (32, 48), in_plane=True)
    rng = np.random.default_rng(0)
    warps = [draw_warp(settings, rng) for _ in range(2000)]
    elastic = np.mean([w.displacement is not None for w in warps])
    moved = np.mean([w.matrix is not None for w in warps])
    assert abs(elastic - 0.5) < 0.04
    assert abs(moved - (1 - 0.8 * 0.7)) < 0.04  # rotation or zoom
    flips = np.array([w.flips for w in warps])
    assert not flips[:, 0].any() and abs(flips[:, 1:].mean() - 0.5) < 0.03
    scales = [
        abs(np.linalg.det(w.matrix)) ** 0.5 for w in warps if w.matrix is not None
    ]  # rotation has determinant 1, so this is the zoom
    assert min(scales) >= 0.7 - 1e-9 and max(scales) <= 1.4 + 1e-9
    zoomed = [s for s in scales if abs(s - 1) > 1e-9]
    assert 0.4 < np.mean(np.array(zoomed) < 1) < 0.6  # zoom-in and zoom-out equally often
    assert all(w.displacement.shape == (2, 32, 48) for w in warps if w.displacement is not None)


def test_noise_blur_and_low_resolution_transforms():
    rng = np.random.default_rng(4)
    np.random.seed(0)
    data = np.zeros((4, 1, 3, 40, 40), np.float32)
    noisy = NoiseTransform((0.05, 0.05), p_per_sample=1.0)(data=data.copy())["data"]
    assert noisy.dtype == np.float32 and noisy.std() == pytest.approx(0.05, rel=0.05)

    spikes = np.zeros((2, 1, 3, 21, 21), np.float32)
    spikes[:, :, 1, 10, 10] = 1.0
    flat = BlurTransform((1.0, 1.0), in_plane=True, p_per_sample=1.0)(data=spikes.copy())["data"]
    assert flat[:, :, 1].sum() == pytest.approx(2.0, rel=1e-3)  # mass kept in its slice
    assert np.abs(flat[:, :, [0, 2]]).max() == 0  # in-plane: never into the next slice
    assert flat[0, 0, 1, 10, 11] == pytest.approx(np.exp(-0.5) * flat[0, 0, 1, 10, 10], rel=1e-3)
    iso = BlurTransform((1.0, 1.0), p_per_channel=1.0, p_per_sample=1.0)(data=spikes.copy())
    assert iso["data"][:, :, 0].max() > 0  # 3D blur does reach the neighbouring slice

    noise = rng.normal(size=(5, 32, 32)).astype(np.float32)
    assert np.array_equal(simulate_low_resolution(noise, 1.0, (0,)), noise)
    low = simulate_low_resolution(noise, 0.5, ignore_axes=(0,))
    assert low.shape == noise.shape and low.dtype == np.float32
    assert low.min() >= noise.min() and low.max() <= noise.max()
    # half the resolution: neighbouring pixels become strongly correlated
    assert np.abs(np.diff(low, axis=2)).mean() < 0.6 * np.abs(np.diff(noise, axis=2)).mean()
    slices = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None], (5, 32, 32))
    kept = simulate_low_resolution(slices.copy(), 0.5, ignore_axes=(0,))
    np.testing.assert_allclose(kept, slices)  # the ignored (thick) axis is never mixed
    batch = np.broadcast_to(noise, (2, 1, 5, 32, 32)).copy()
    t = LowResolutionTransform((0.5, 0.5), p_per_channel=1.0, p_per_sample=1.0, ignore_axes=(0,))
    np.testing.assert_allclose(t(data=batch)["data"][1, 0], low)


def test_kspace_transforms_keep_float32():
    x = np.random.default_rng(0).normal(size=(1, 4, 24, 20)).astype(np.float32)
    assert add_ghosts(x, 3, 0.5, -1).dtype == np.float32
    assert shift_kspace_lines(x, (1.5, -2.0), 1, 0.3).dtype == np.float32
