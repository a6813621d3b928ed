"""Patch sampling: read sizes, centres, padding, foreground oversampling, 2.5D, crop windows."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from batchgenerators.augmentations.utils import (
    create_zero_centered_coordinate_mesh,
    elastic_deform_coordinates,
    rotate_coords_2d,
    rotate_coords_3d,
    scale_coords,
)
from scipy.ndimage import map_coordinates

from autoseg.data import LoaderConfig, build_loader
from autoseg.data.augment import (
    NO_AUGMENTATION,
    Warp,
    draw_warp,
    elastic_alpha,
    elastic_field,
    sample_offsets,
    spatial_settings,
)
from autoseg.data.dataset import write_case_arrays
from autoseg.data.sampler import (
    PatchGeometry,
    augmented_read_size,
    crop_window_centre,
    elastic_displacement_bound,
    extract_region,
    foreground_voxel,
    interpolate_linear,
    interpolate_nearest,
    jitter_voxels,
    random_start,
    read_patch,
    rotated_extent,
)

WARP_ALWAYS = replace(
    NO_AUGMENTATION, p_rotation=1.0, p_zoom=1.0, p_elastic=1.0, mirror_axes=(0, 1, 2)
)


# --------------------------------------------------------------------------- read sizes
def test_rotated_extent_2d_matches_geometry():
    assert rotated_extent((100, 50), (0.0,)) == pytest.approx((100, 50))
    diag = math.hypot(100, 50)
    # within +-90 degrees both axes reach the diagonal
    assert rotated_extent((100, 50), (math.pi / 2,)) == pytest.approx((diag, diag))
    # 30 degrees: axis 0 peaks at the diagonal (at 26.6 deg, inside the range); axis 1 at 30
    e0, e1 = rotated_extent((100, 50), (math.radians(30),))
    assert e0 == pytest.approx(diag)
    assert e1 == pytest.approx(100 * math.sin(math.radians(30)) + 50 * math.cos(math.radians(30)))


def test_rotated_extent_3d_zero_and_square():
    assert rotated_extent((10, 20, 30), (0, 0, 0)) == pytest.approx((10, 20, 30))
    # rotating only about axis 0 by 45 degrees turns a 20x20 face into a 28.3 square
    e = rotated_extent((10, 20, 20), (math.radians(45), 0, 0))
    assert e[0] == pytest.approx(10)
    assert e[1] == pytest.approx(20 * math.sqrt(2)) and e[2] == pytest.approx(20 * math.sqrt(2))


def _bg_coords(patch, angles, zoom, alpha, sigma, rng_seed):
    """Coordinates batchgenerators' spatial transform samples, at the extreme settings."""
    np.random.seed(rng_seed)
    coords = create_zero_centered_coordinate_mesh(patch)
    if alpha > 0:
        coords = elastic_deform_coordinates(coords, alpha, sigma)
    if len(patch) == 2:
        coords = rotate_coords_2d(coords, np.random.uniform(-angles[0], angles[0]))
    else:
        a = [np.random.uniform(-x, x) for x in angles]
        coords = rotate_coords_3d(coords, *a)
    return scale_coords(coords, zoom)


@pytest.mark.parametrize(
    "patch,angles,elastic",
    [
        ((96, 80), (math.pi,), False),
        ((96, 80), (math.radians(30),), True),
        ((12, 40, 32), (math.radians(30),) * 3, False),
        ((12, 40, 32), (math.radians(30),) * 3, True),
    ],
)
def test_read_size_covers_library_transform(patch, angles, elastic):
    """No sample point of the library's rotation + zoom (+ elastic) leaves the read region."""
    dim = len(patch)
    zoom = 1.4
    alpha = elastic_alpha(3.0, 9.0, dim) if elastic else 0.0
    margin = elastic_displacement_bound(alpha, 9.0, dim)
    read = augmented_read_size(patch, angles, zoom, margin)
    assert all((r - p) % 2 == 0 for r, p in zip(read, patch))
    for seed in range(12):
        coords = _bg_coords(patch, angles, zoom, alpha, 9.0, seed)
        for d in range(dim):
            ctr = read[d] / 2.0 - 0.5  # where the library centres a centre crop
            c = coords[d] + ctr
            assert c.min() >= 0 and c.max() <= read[d] - 1, (d, c.min(), c.max(), read)


def test_read_size_is_not_wasteful():
    patch = (96, 80)
    read = augmented_read_size(patch, (math.pi,), 1.4, 0.0)
    need = math.hypot(95, 79) * 1.4
    for r in read:
        assert need <= r <= need + 8
    assert augmented_read_size(patch, (0.0,), 1.0, 0.0) == (100, 84)  # safety margin only


def test_elastic_bound_matches_measured_displacements():
    rng_std = []
    alpha = elastic_alpha(3.0, 9.0, 2)
    bound = elastic_displacement_bound(alpha, 9.0, 2)
    np.random.seed(0)
    for _ in range(10):
        coords = create_zero_centered_coordinate_mesh((128, 128))
        disp = elastic_deform_coordinates(coords, alpha, 9.0) - coords
        centre = disp[:, 40:88, 40:88]  # away from the filter's zero-padded border
        rng_std.append(centre.std())
        assert np.abs(disp).max() <= bound
    # the formula's std (bound / 4) is the measured one within 25 %
    assert np.mean(rng_std) == pytest.approx(bound / 4, rel=0.25)


def test_sample_positions_stay_inside_the_largest_read_size():
    """Whatever a sample draws, its positions (plus the voxel linear interpolation reads
    beyond them) fit in augmented_read_size, the documented worst case."""
    rng = np.random.default_rng(3)
    for patch in ((40, 56), (8, 24, 32)):
        settings = spatial_settings(WARP_ALWAYS, patch, in_plane=len(patch) == 2)
        read = settings.read_size()
        for _ in range(40):
            pos = sample_offsets(patch, draw_warp(settings, rng))
            assert pos is not None and pos.shape == (len(patch), *patch)
            for ax in range(len(patch)):
                assert np.abs(pos[ax]).max() + 1 <= read[ax] / 2, (patch, ax)


def test_elastic_field_has_the_requested_std_and_smoothness():
    rng = np.random.default_rng(0)
    sigma, std = 10.0, 2.0
    fields = [elastic_field((160, 200), std, sigma, rng) for _ in range(6)]
    f = np.stack(fields)  # (6, 2, 160, 200)
    assert f.dtype == np.float32
    assert f.std() == pytest.approx(std, rel=0.12)
    assert abs(f.mean()) < 0.2 * std
    # Gaussian-smoothed white noise has autocorrelation exp(-r^2 / (4 sigma^2)) at lag r
    for lag in (5, 10, 20):
        a, b = f[..., :-lag], f[..., lag:]
        corr = (a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean())
        assert corr == pytest.approx(math.exp(-(lag**2) / (4 * sigma**2)), abs=0.08), lag
    # the edges are as random as the middle (no fading to zero at the border)
    assert f[..., :5].std() == pytest.approx(f[..., 90:110].std(), rel=0.25)
    # 3D works the same way
    f3 = elastic_field((12, 40, 36), 1.0, 6.0, rng)
    assert f3.shape == (3, 12, 40, 36) and 0.5 < f3.std() < 1.5


def _reference_warp(image, seg, centre, patch, offsets, flips, in_plane):
    """What read_patch must give: scipy's map_coordinates on the zero-padded volume at the
    absolute sample positions (order 1 for the image, 0 for labels), then the flips."""
    starts = [c - p // 2 for c, p in zip(centre, patch)]
    if in_plane:
        pos = [offsets[k] + starts[1 + k] + (patch[1 + k] - 1) / 2 for k in range(2)]
        data = np.zeros((image.shape[0], *patch), np.float32)
        labels = np.zeros(patch, np.uint8)
        for i in range(patch[0]):
            z = starts[0] + i
            if not 0 <= z < image.shape[1]:
                continue
            for c in range(image.shape[0]):
                data[c, i] = map_coordinates(
                    image[c, z].astype(np.float64), pos, order=1, mode="grid-constant", cval=0
                )
            labels[i] = map_coordinates(seg[z], pos, order=0, mode="grid-constant", cval=0)
    else:
        pos = [offsets[k] + starts[k] + (patch[k] - 1) / 2 for k in range(3)]
        data = np.stack(
            [
                map_coordinates(image[c].astype(np.float64), pos, order=1, mode="grid-constant")
                for c in range(image.shape[0])
            ]
        ).astype(np.float32)
        labels = map_coordinates(seg, pos, order=0, mode="grid-constant", cval=0)
    for ax, f in enumerate(flips):
        if f:
            data = np.flip(data, 1 + ax)
            labels = np.flip(labels, ax)
    return data, labels


@pytest.mark.parametrize("in_plane", [True, False])
def test_warped_read_equals_map_coordinates_on_the_padded_volume(in_plane):
    """Reading only the box the positions need and interpolating there gives exactly what
    resampling the whole zero-padded volume would — also for patches hanging over the edge."""
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 10, 40, 36)).astype(np.float32)
    seg = rng.integers(0, 3, size=(10, 40, 36)).astype(np.uint8)
    patch = (6, 24, 20)
    geom = PatchGeometry(patch=patch, read=patch, slice_mode=False)
    settings = spatial_settings(WARP_ALWAYS, patch[1:] if in_plane else patch, in_plane)
    for _ in range(6):
        warp = draw_warp(settings, rng)
        offsets = sample_offsets(settings.patch, warp)
        centre = tuple(int(rng.integers(0, n)) for n in image.shape[1:])
        data, labels = read_patch(
            image, seg, centre, geom, (0, 0, 0), image.shape[1:], None, None, offsets, warp.flips
        )
        ref_data, ref_labels = _reference_warp(
            image, seg, centre, patch, offsets, warp.flips, in_plane
        )
        assert data.shape == (2, *patch) and labels.shape == patch
        np.testing.assert_allclose(data, ref_data, atol=1e-4)
        assert (labels != ref_labels).mean() < 1e-3  # float32 positions may round a tie


def test_unwarped_read_with_flips_is_a_plain_flipped_crop():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(1, 8, 30, 30)).astype(np.float32)
    seg = rng.integers(0, 4, size=(8, 30, 30)).astype(np.uint8)
    geom = PatchGeometry(patch=(4, 10, 12), read=(4, 10, 12), slice_mode=False)
    data, labels = read_patch(
        image, seg, (4, 15, 15), geom, (0, 0, 0), (8, 30, 30), flips=(True, False, True)
    )
    crop = image[:, 2:6, 10:20, 9:21]
    np.testing.assert_array_equal(data, crop[:, ::-1, :, ::-1])
    np.testing.assert_array_equal(labels, seg[2:6, 10:20, 9:21][::-1, :, ::-1])


def test_interpolation_helpers():
    region = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    coords = np.array([[0.0, 1.5, 2.0, 0.25], [0.0, 2.5, 3.0, 1.0]])
    out = interpolate_linear(region, coords)
    expected = [0.0, 1.5 * 4 + 2.5, 2 * 4 + 3, 0.25 * 4 + 1]
    np.testing.assert_allclose(out[0], expected)
    np.testing.assert_allclose(out[1], np.array(expected) + 12)
    labels = np.array([[[0, 1], [2, 3]]], np.uint8)
    near = interpolate_nearest(labels, np.array([[0.2, 0.8, 0.6], [0.9, 0.1, 0.6]]))
    assert near.dtype == np.uint8 and near.tolist() == [[1, 2, 3]]


def test_identity_warp_reads_without_interpolation():
    settings = spatial_settings(NO_AUGMENTATION, (16, 16), in_plane=True)
    warp = draw_warp(settings, np.random.default_rng(0))
    assert warp == Warp(None, None, (False, False, False)) and not warp.moves
    assert sample_offsets((16, 16), warp) is None


# --------------------------------------------------------------------------- centres
def test_random_start_ranges():
    rng = np.random.default_rng(0)
    starts = {random_start(0, 10, 4, rng) for _ in range(400)}
    assert starts == set(range(0, 7))  # every position that keeps the window inside
    small = {random_start(0, 3, 8, rng) for _ in range(400)}
    assert small == set(range(-5, 1))  # the small region lands anywhere inside the window
    assert random_start(0, 3, 8, rng, centred=True) == -3 + 0  # (3 - 8) // 2
    assert random_start(5, 6, 1, rng) == 5


def test_crop_window_centre():
    rng = np.random.default_rng(1)
    assert crop_window_centre(10, 19, 32, 0, rng) == 15
    jittered = {crop_window_centre(10, 19, 32, 3, rng) for _ in range(300)}
    assert jittered == set(range(12, 19))
    # foreground longer than the window: the window stays on the foreground
    for _ in range(200):
        c = crop_window_centre(0, 99, 20, 0, rng)
        assert c - 10 >= 0 and c + 10 <= 100


def test_jitter_voxels():
    assert jitter_voxels(4.0, (3.0, 0.5, 0.5)) == (1, 8, 8)
    assert jitter_voxels(4.0, None) == (4, 4, 4)


def test_foreground_voxel_labels_equally_likely_and_box():
    rng = np.random.default_rng(2)
    locs = {
        1: np.argwhere(np.ones((10, 10, 10))).astype(np.int64),
        2: np.array([[0, 0, 0], [9, 9, 9]], dtype=np.int64),
    }
    picks = [foreground_voxel(locs, rng) for _ in range(2000)]
    rare = sum(p in ((0, 0, 0), (9, 9, 9)) for p in picks) / len(picks)
    assert 0.45 < rare < 0.56  # label 2 (2 voxels) as often as label 1 (1000 voxels)
    inside = [foreground_voxel(locs, rng, (5, 5, 5), (10, 10, 10)) for _ in range(200)]
    assert all(all(5 <= v < 10 for v in p) for p in inside)
    assert foreground_voxel({}, rng) is None


def test_extract_region_pads_and_replicates():
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out = extract_region(arr, (-1, -2, 3), (5, 6, 4))
    assert out.shape == (2, 5, 6, 4)
    np.testing.assert_array_equal(out[:, 1:4, 2:6, 0:2], arr[:, :, :, 3:5])
    assert out[:, 0].sum() == 0 and out[:, 4].sum() == 0 and out[:, :, :2].sum() == 0
    assert out[:, :, :, 2:].sum() == 0
    rep = extract_region(arr, (-1, 0, 0), (5, 4, 5), replicate_axes=(0,))
    for i, z in enumerate([0, 0, 1, 2, 2]):
        np.testing.assert_array_equal(rep[:, i], arr[:, z])
    # nothing of the array in the box
    assert extract_region(arr, (10, 0, 0), (2, 2, 2)).sum() == 0


# --------------------------------------------------------------------------- through the loader
def _case(folder, name, image, seg):
    write_case_arrays(folder, name, image, seg)


def test_foreground_oversampling_rate(tmp_path):
    """A 3x3x3 object in 40x200x200: random 8x32x32 patches hit it ~0.6 % of the time, so
    the fraction of patches with foreground is the oversampling rate (+ that)."""
    seg = np.zeros((40, 200, 200), np.uint8)
    seg[20:23, 100:103, 100:103] = 1
    for i in range(2):
        _case(tmp_path, f"c{i}", np.zeros((1, 40, 200, 200), np.float32), seg)
    p_random = (8 + 2) * (32 + 2) ** 2 / (40 * 200 * 200)
    n = 25 * 24
    for rate in (0.0, 0.33, 1.0):
        cfg = LoaderConfig(dim=3, patch_size=(8, 32, 32), batch_size=24, oversample_foreground=rate)
        with build_loader(tmp_path, None, cfg, seed=3, augment=False) as loader:
            hits = sum(
                int(b["target"].reshape(24, -1).any(1).sum())
                for b in (next(loader) for _ in range(25))
            )
        expected = rate + (1 - rate) * p_random
        tol = 4 * math.sqrt(max(expected * (1 - expected), 1e-4) / n) + 0.005
        assert abs(hits / n - expected) <= tol, (rate, hits / n, expected)
    assert p_random < 0.01


def test_small_images_are_padded_and_kept_whole(tmp_path):
    img = np.ones((2, 5, 20, 20), np.float32)
    img[1] *= 2
    seg = np.zeros((5, 20, 20), np.uint8)
    seg[2, 5:8, 5:8] = 1
    _case(tmp_path, "small", img, seg)
    cfg = LoaderConfig(dim=3, patch_size=(8, 32, 32), batch_size=6, oversample_foreground=0.0)
    with build_loader(tmp_path, None, cfg, seed=0, augment=False) as loader:
        b = next(loader)
    assert b["data"].shape == (6, 2, 8, 32, 32) and b["target"].shape == (6, 1, 8, 32, 32)
    for i in range(6):
        assert b["data"][i, 0].sum() == 5 * 20 * 20  # the whole image, once
        assert b["data"][i, 1].sum() == 2 * 5 * 20 * 20
        assert b["target"][i].sum() == 9
    # augmented too: shape holds and nothing crashes on the tiny image
    with build_loader(tmp_path, None, cfg, seed=0, augment=True) as loader:
        assert next(loader)["data"].shape == (6, 2, 8, 32, 32)


def test_2p5d_stacks_neighbours_and_targets_centre_slice(tmp_path):
    z, y, x = 6, 16, 16
    img = np.zeros((2, z, y, x), np.float32)
    seg = np.zeros((z, y, x), np.uint8)
    for k in range(z):
        img[0, k] = k
        img[1, k] = 100 + k
        seg[k, k, :] = 1  # slice k labels row k
    _case(tmp_path, "stack", img, seg)
    cfg = LoaderConfig(
        dim=2, patch_size=(16, 16), batch_size=30, slices=3, oversample_foreground=0.0
    )
    with build_loader(tmp_path, None, cfg, seed=1, augment=False) as loader:
        b = next(loader)
    assert b["data"].shape == (30, 6, 16, 16) and b["target"].shape == (30, 1, 16, 16)
    seen = set()
    for i in range(30):
        centre = int(b["data"][i, 1, 0, 0])
        seen.add(centre)
        below, above = max(centre - 1, 0), min(centre + 1, z - 1)  # edge slices replicated
        expected = [below, centre, above, 100 + below, 100 + centre, 100 + above]
        np.testing.assert_array_equal(b["data"][i, :, 0, 0], expected)
        rows = np.flatnonzero(b["target"][i, 0].any(1))
        assert list(rows) == [centre]
    assert {0, z - 1} <= seen  # the edge cases were exercised


def test_2d_config_slices_along_slice_axis(tmp_path):
    img = np.broadcast_to(np.arange(1, 13, dtype=np.float32), (1, 4, 8, 12)).copy()
    seg = np.zeros((4, 8, 12), np.uint8)
    seg[:, :, 5] = 1
    _case(tmp_path, "sag", img, seg)
    cfg = LoaderConfig(dim=2, patch_size=(4, 8), batch_size=20, slice_axis=2)
    with build_loader(tmp_path, None, cfg, seed=0, augment=False) as loader:
        b = next(loader)
    assert b["data"].shape == (20, 1, 4, 8)
    for i in range(20):
        vals = np.unique(b["data"][i])
        vals = vals[vals > 0]  # 0 = padding of foreground-centred patches
        assert len(vals) == 1  # one sagittal slice
        assert b["target"][i].any() == (vals[0] == 6)  # x = 5 is labelled


def test_crop_window_is_centred_on_foreground(tmp_path):
    img = np.ones((1, 1, 300, 300), np.float32)
    seg = np.zeros((1, 300, 300), np.uint8)
    seg[0, 200:210, 60:70] = 1  # bounding-box centre (205, 65)
    _case(tmp_path, "us", img, seg)
    cfg = LoaderConfig(
        dim=2,
        patch_size=(96, 96),
        batch_size=16,
        crop_window=(64, 64),
        spacing=(1.0, 1.0),
        crop_jitter_mm=4.0,
        oversample_foreground=0.0,
    )
    with build_loader(tmp_path, None, cfg, seed=5, augment=False) as loader:
        b = next(loader)
    offsets = []
    for i in range(16):
        data = b["data"][i, 0]
        ys, xs = np.nonzero(data)
        # only the 64x64 window is image, the rest of the 96x96 patch is padding
        assert len(ys) == 64 * 64
        assert ys.max() - ys.min() == 63 and xs.max() - xs.min() == 63
        assert (ys.min(), xs.min()) == (16, 16)  # the window sits in the middle of the patch
        fy, fx = np.nonzero(b["target"][i, 0])
        cy, cx = (fy.min() + fy.max() + 1) / 2, (fx.min() + fx.max() + 1) / 2
        offsets.append((cy - 48, cx - 48))
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 4  # centred up to the 4 mm jitter
    assert len({tuple(o) for o in offsets}) > 3  # and the jitter is there


def test_scratch_arrays_are_reused_per_thread():
    import threading

    from autoseg.data.sampler import clear_scratch, scratch

    a = scratch("test", (4, 5), np.float32)
    b = scratch("test", (3,), np.float32)
    assert b.shape == (3,) and np.shares_memory(a, b)  # the same memory, no new allocation
    assert not np.shares_memory(a, scratch("other", (4, 5), np.float32))
    assert scratch("test", (4, 5), np.uint8).dtype == np.uint8
    seen = []
    t = threading.Thread(target=lambda: seen.append(scratch("test", (4, 5), np.uint8)))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], scratch("test", (4, 5), np.uint8))  # own per thread
    clear_scratch()
    assert not np.shares_memory(b, scratch("test", (3,), np.float32))
