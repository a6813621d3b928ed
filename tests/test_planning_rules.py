"""One or more unit tests per planning rule (pure functions, no network, no files)."""

from __future__ import annotations

import math

import pytest

from autoseg.errors import AutosegError
from autoseg.planning import configurations as cfg
from autoseg.planning.normalization import channel_normalization, crop_volume_ratio
from autoseg.planning.patch import (
    CachedEstimator,
    approximate_memory_gb,
    axis_to_shrink,
    batch_size_rule,
    extra_optimizer_state_gb,
    fit_patch,
    initial_patch,
    minimal_patch,
)
from autoseg.planning.sampling import (
    augmentation_profile,
    loss_rule,
    oversample_rate,
    patch_holds_case,
)
from autoseg.planning.schedule import (
    ADAMW_BELOW_ITERATIONS,
    optimizer_rule,
    parse_duration,
    schedule_rule,
)
from autoseg.planning.spacing import (
    anisotropy_ratio,
    median_resampled_shape,
    resampled_shape,
    resampling_rule,
    target_spacing,
    thick_axis,
    total_resampled_voxels,
)
from autoseg.planning.topology import (
    MAX_FEATURES,
    architecture_block,
    features_per_stage,
    fit_topology,
    pooling_topology,
    round_down,
)
from autoseg.planning.topology import total_stride as total_strides

# ---------------------------------------------------------------- spacing


def test_thick_axis_needs_ratio_above_three():
    assert anisotropy_ratio([3.0, 0.75, 0.75]) == 4.0
    assert thick_axis([3.0, 0.75, 0.75]) == 0
    assert thick_axis([0.5, 0.5, 4.0]) == 2
    assert thick_axis([1.5, 0.6, 0.6]) is None  # 2.5
    assert thick_axis([1.0, 1.0]) is None


def test_target_spacing_median_when_isotropic():
    spacings = [[1.0, 0.8, 0.8], [1.2, 0.9, 0.9], [1.1, 0.7, 0.7]]
    shapes = [[100, 200, 200]] * 3
    target, why = target_spacing(spacings, shapes)
    assert target == pytest.approx([1.1, 0.8, 0.8])
    assert "median on every axis" in why


def test_target_spacing_thick_axis_takes_10th_percentile():
    # 10 cases, slice thickness 3..7.5 mm, 0.5 mm in-plane, few slices: the thick axis takes
    # its 10th percentile, not the median 5.25.
    spacings = [[3.0 + 0.5 * i, 0.5, 0.5] for i in range(10)]
    shapes = [[30, 320, 320]] * 10
    target, why = target_spacing(spacings, shapes)
    assert target[1:] == [0.5, 0.5]
    assert target[0] == pytest.approx(3.45)  # np.percentile(3.0..7.5, 10)
    assert "10th percentile" in why


def test_target_spacing_thick_axis_never_finer_than_in_plane():
    # Two 0.5 mm outliers make the 10th percentile 0.5 mm, finer than the 1 mm in-plane pixels:
    # the target is raised to 1 mm.
    spacings = [[0.5, 1.0, 1.0]] * 2 + [[4.0, 1.0, 1.0]] * 9
    shapes = [[20, 300, 300]] * 11
    target, why = target_spacing(spacings, shapes)
    assert target == [1.0, 1.0, 1.0]
    assert "raised to the coarsest in-plane spacing" in why


def test_target_spacing_median_when_many_slices():
    # Anisotropic spacing but not few slices (200 slices vs 256): median kept.
    spacings = [[3.0, 0.75, 0.75]] * 5 + [[6.0, 0.75, 0.75]] * 5
    shapes = [[200, 256, 256]] * 10
    target, why = target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(4.5)
    assert "not < 1/3" in why


def test_target_spacing_2d_is_median():
    target, _ = target_spacing([[1.0, 1.0], [0.5, 0.5], [2.0, 2.0]], [[400, 600]] * 3)
    assert target == [1.0, 1.0]


def test_resampled_shapes():
    assert resampled_shape([40, 256, 256], [3.0, 0.75, 0.75], [3.0, 1.5, 1.5]) == [40, 128, 128]
    shapes, spacings = [[10, 100], [20, 100], [30, 100]], [[1.0, 1.0]] * 3
    assert median_resampled_shape(shapes, spacings, [2.0, 1.0]) == [10, 100]
    assert total_resampled_voxels(shapes, spacings, [1.0, 1.0]) == 6000


def test_resampling_separates_the_thick_axis():
    res, why = resampling_rule([3.0, 0.75, 0.75], [3.0, 0.75, 0.75])
    assert res.thick_axis == 0
    assert (res.image_order, res.image_order_thick_axis) == (3, 0)
    assert (res.label_order, res.label_order_thick_axis) == (1, 0)
    iso, _ = resampling_rule([1.0, 1.0, 1.0], [1.0, 1.0, 1.1])
    assert iso.thick_axis is None and iso.image_order_thick_axis == 3


# ---------------------------------------------------------------- normalization


def test_ct_normalization_uses_foreground_percentiles():
    stats = {"mean": 40.0, "std": 20.0, "p00_5": -50.0, "p99_5": 200.0}
    norm, why = channel_normalization("ct", stats, 1.0)
    assert norm.scheme == "ct" and norm.clip == [-50.0, 200.0]
    assert (norm.mean, norm.std) == (40.0, 20.0)
    assert "clip" in why


@pytest.mark.parametrize("modality", ["mri", "ultrasound", "other"])
def test_non_ct_is_zscore_mask_free_unless_cropping_removed_a_lot(modality):
    norm, _ = channel_normalization(modality, None, 0.95)
    assert norm.scheme == "zscore" and not norm.use_nonzero_mask
    masked, why = channel_normalization(modality, None, 0.6)
    assert masked.use_nonzero_mask and "nonzero" in why


def test_crop_volume_ratio_is_median_over_cases():
    shapes = [[10, 10], [10, 10], [10, 10]]
    cropped = [[5, 10], [10, 10], [8, 10]]
    assert crop_volume_ratio(shapes, cropped) == pytest.approx(0.8)


# ---------------------------------------------------------------- topology


def test_anisotropic_pooling_waits_for_in_plane():
    topo = pooling_topology([3.0, 0.75, 0.75], [40, 256, 256])
    strides = [list(s) for s in topo.strides]
    assert strides[0] == [1, 1, 1]
    assert strides[1] == [1, 2, 2] and strides[2] == [1, 2, 2]  # 0.75 -> 1.5 -> 3.0 in-plane
    assert strides[3] == [2, 2, 2]  # now isotropic: all pool
    assert [list(k) for k in topo.kernel_sizes[:3]] == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    assert topo.pools_per_axis[0] == 3  # 40 -> 20 -> 10 -> 5 (no pooling below 8)


def test_pooling_stops_at_min_feature_map():
    topo = pooling_topology([1.0, 1.0], [64, 32])
    assert topo.pools_per_axis == (4, 3)  # 64 -> 4; 32 -> 4
    assert all(p / d >= 4 for p, d in zip([64, 32], topo.divisor))
    # An axis that stops (12 -> 6) keeps the finest spacing: the other may pool only once
    # more (spacing 2 -> 4 is then 2x the finest), as in nnU-Net.
    assert pooling_topology([1.0, 1.0], [64, 12]).pools_per_axis == (2, 1)


def test_stage_cap():
    topo = pooling_topology([1.0, 1.0], [4096, 4096])
    assert topo.n_stages == 8


def test_fit_topology_divisible_and_not_lossy():
    patch, topo = fit_topology([1.0, 1.0], [468, 606])
    assert all(p % d == 0 for p, d in zip(patch, topo.divisor))
    assert patch == [448, 576]  # 606 -> 512 with 7 poolings would lose 15 %: pooled 6 times
    assert round_down([100, 7], [16, 4]) == [96, 4]


def test_features_double_to_cap():
    assert features_per_stage(7, 3) == [32, 64, 128, 256, 320, 320, 320]
    assert features_per_stage(8, 2)[-1] == MAX_FEATURES[2] == 512


def test_architecture_block_matches_network_contract():
    from autoseg.networks import ArchitectureConfig

    topo = pooling_topology([3.0, 0.75, 0.75], [40, 192, 192])
    for network in ("unet", "resenc_unet"):
        block = architecture_block(topo, network=network, in_channels=3, num_classes=2)
        config = ArchitectureConfig.from_dict(block)  # raises on any inconsistency
        assert config.required_divisor() == topo.divisor
        assert block["deep_supervision"] is True
    assert block["n_blocks_per_stage"][:3] == [1, 3, 4]
    with pytest.raises(ValueError):
        architecture_block(topo, network="vnet", in_channels=1, num_classes=2)


# ---------------------------------------------------------------- patch and batch


def _arch_for(topo):
    return architecture_block(topo, network="unet", in_channels=1, num_classes=2)


def test_initial_patch_is_median_capped_isotropic_in_mm():
    patch, _ = initial_patch([40, 256, 256], [3.0, 0.75, 0.75])
    assert patch == [40, 256, 256]
    patch, _ = initial_patch([600, 600, 600], [1.0, 1.0, 1.0])
    assert patch == [256, 256, 256]
    patch, why = initial_patch([5, 6], [1.0, 1.0])
    assert patch == [8, 8] and "padded" in why


def test_minimal_patch_pads_only_fine_axes():
    assert minimal_patch([5, 200, 200], [10.0, 0.5, 0.5]) == [5, 8, 8]
    assert minimal_patch([100, 100], [1.0, 1.0]) == [8, 8]


def test_axis_to_shrink_prefers_largest_ratio_then_longest_mm():
    assert axis_to_shrink([40, 200, 200], [40, 256, 256], [3.0, 0.75, 0.75], [8, 8, 8]) == 0
    # tie (ratio 1): the longer side in mm (256 x 0.75 = 192 mm > 40 x 3 = 120 mm)
    assert axis_to_shrink([40, 256, 200], [40, 256, 256], [3.0, 0.75, 0.75], [8, 8, 8]) == 1
    assert axis_to_shrink([32, 256, 256], [40, 256, 256], [3.0, 0.75, 0.75], [8, 8, 8]) == 1
    assert axis_to_shrink([8, 8], [100, 100], [1.0, 1.0], [8, 8]) is None


def test_fit_patch_respects_budget_and_fails_cleanly():
    spacing, median = [3.0, 0.75, 0.75], [40, 256, 256]
    fit = fit_patch(spacing, median, _arch_for, approximate_memory_gb, 2.0)
    assert fit.memory_gb <= 2.0
    assert all(p % d == 0 for p, d in zip(fit.patch, fit.topology.divisor))
    assert all(p <= m for p, m in zip(fit.patch, median))
    assert approximate_memory_gb(fit.architecture, tuple(fit.patch), 2) == fit.memory_gb
    with pytest.raises(AutosegError, match="cannot hold even the smallest patch"):
        fit_patch(spacing, median, _arch_for, approximate_memory_gb, 0.4)


def test_batch_size_grows_until_memory_or_five_percent():
    topo = pooling_topology([1.0, 1.0], [128, 128])
    arch = _arch_for(topo)
    est = CachedEstimator(approximate_memory_gb)
    # Unlimited data: memory decides.
    batch, mem, why = batch_size_rule(arch, [128, 128], est, 3.0, 10**12)
    assert mem <= 3.0 < est(arch, (128, 128), batch + 1)
    assert "would exceed" in why
    # 5 % of 20 images of 128^2 = one patch: batch stays at the minimum 2.
    batch, _, why = batch_size_rule(arch, [128, 128], est, 3.0, 20 * 128 * 128)
    assert batch == 2 and "5 %" in why
    # 5 % of 200 images allows 10.
    batch, _, _ = batch_size_rule(arch, [128, 128], est, 100.0, 200 * 128 * 128)
    assert batch == 10


def test_cached_estimator_calls_once_per_question():
    calls = []

    def est(arch, patch, batch):
        calls.append(batch)
        return 1.0

    cached = CachedEstimator(est)
    arch = {"a": 1}
    cached(arch, (8, 8), 2)
    cached(dict(arch), (8, 8), 2)
    cached(arch, (8, 8), 3)
    assert calls == [2, 3]


# ---------------------------------------------------------------- configurations


def test_candidate_configurations():
    assert cfg.candidate_configurations(2) == ("2d",)
    assert cfg.candidate_configurations(3) == ("2d", "2.5d", "3d_fullres", "3d_lowres", "crop")
    assert cfg.slice_axis(None) == 0 and cfg.slice_axis(2) == 2


@pytest.mark.parametrize(
    ("extent", "spacing", "expected"),
    [
        ([120.0, 10.0, 14.0], 3.0, 5),  # 14 / 6 -> floor 2 -> 5
        ([264.0, 9.0, 13.0], 4.4, 3),  # 13 / 8.8 -> 1 -> 3
        ([120.0, 2.0, 2.0], 3.0, 3),  # tiny: clamped up to 3
        ([300.0, 80.0, 80.0], 1.0, 7),  # large: clamped down to 7
        ([3.0, 50.0, 50.0], 1.0, 3),  # short blob: limited by its length along z
    ],
)
def test_context_slices(extent, spacing, expected):
    k, _ = cfg.context_slices([extent], 0, spacing, 100)
    assert k == expected and k % 2 == 1


def test_context_slices_limited_by_stack_and_missing_extent():
    assert cfg.context_slices([[300.0, 80.0, 80.0]], 0, 1.0, 4)[0] == 3
    assert cfg.context_slices([None], 0, 3.0, 40)[0] == 3


def test_lowres_step_coarsens_in_plane_first():
    s = [3.0, 0.75, 0.75]
    nxt = cfg.lowres_step(s)
    assert nxt[0] == 3.0 and nxt[1] == pytest.approx(0.7575)
    s = cfg.lowres_spacing([3.0, 0.75, 0.75], 70)  # 0.75 * 1.01^70 = 1.505 > 1.5
    assert s[0] == 3.0 and s[1] > 1.5
    later = cfg.lowres_step(s)
    assert later[0] == pytest.approx(3.03)  # all axes together now
    assert cfg.lowres_step([1.0, 1.0]) == [1.01, 1.01]


def test_lowres_steps_finds_first_step_reaching_coverage():
    calls = []

    def coverage(k):
        calls.append(k)
        return min(1.0, 0.04 * 1.03**k)

    k = cfg.lowres_steps(coverage)
    assert coverage(k) >= 0.25 > coverage(k - 1)
    assert len(calls) < 20
    assert cfg.lowres_steps(lambda k: 0.0, max_steps=64) is None


def test_needs_lowres_threshold():
    assert cfg.needs_lowres([64, 64, 64], [200, 200, 200])[0]
    assert not cfg.needs_lowres([40, 192, 256], [40, 256, 256])[0]


def test_crop_window_is_three_extents_rounded_up_and_capped():
    mm, vox, _ = cfg.crop_window([137.0, 11.42, 15.98], [3.0, 0.75, 0.75], [40, 256, 256])
    assert vox[0] == 40  # capped at the stack
    assert vox[1] == 48 and mm[1] == 36.0  # 34.3 mm -> 46 voxels -> 48 (3 poolings)
    assert vox[2] == 64
    _, small, _ = cfg.crop_window([2.0, 2.0], [1.0, 1.0], [500, 500])
    assert small == [32, 32]  # at least 32 voxels


def test_wants_crop_only_for_tiny_structures_in_large_images():
    assert cfg.wants_crop(0.0015, [40, 48, 64], [40, 256, 256])[0]
    assert not cfg.wants_crop(0.05, [40, 48, 64], [40, 256, 256])[0]
    assert not cfg.wants_crop(0.0015, [40, 200, 200], [40, 256, 256])[0]


def test_localiser_preference():
    assert cfg.choose_localiser(["2d", "3d_fullres", "3d_lowres"])[0] == "3d_lowres"
    assert cfg.choose_localiser(["2.5d", "3d_fullres", "2d"])[0] == "2d"
    assert cfg.choose_localiser(["3d_fullres"])[0] == "3d_fullres"
    assert cfg.choose_localiser(["2.5d"])[0] is None


def test_foreground_extent_p95_ignores_empty_cases():
    assert cfg.foreground_extent_p95([None, None]) is None
    p95 = cfg.foreground_extent_p95([[10.0, 1.0]] * 19 + [[30.0, 1.0], None])
    assert p95[0] == pytest.approx(11.0) and p95[1] == 1.0


# ---------------------------------------------------------------- sampling, loss, schedule


def test_oversampling_rises_below_one_percent():
    assert oversample_rate(0.05)[0] == 0.33
    assert oversample_rate(0.001)[0] == 0.5
    assert oversample_rate(0.0015)[0] == 0.47
    assert oversample_rate(0.0001)[0] == oversample_rate(0.0)[0] == 0.67
    rates = [oversample_rate(10**-e)[0] for e in range(1, 8)]
    assert rates == sorted(rates)


def test_loss_and_augmentation():
    assert loss_rule("3d_fullres")[0].batch_dice and loss_rule("3d_fullres")[0].name == "dice_ce"
    assert not loss_rule("crop")[0].batch_dice
    whole, why = loss_rule("2d", whole_case=True)
    assert not whole.batch_dice and whole.name == "dice_ce" and "per-sample" in why
    assert loss_rule("2d", whole_case=False)[0].batch_dice
    assert augmentation_profile([0.75, 0.75], 5)[0] == "2.5d"
    assert augmentation_profile([0.75, 0.75])[0] == "2d"
    assert augmentation_profile([3.0, 0.75, 0.75])[0] == "3d_anisotropic"
    assert augmentation_profile([1.0, 0.8, 0.8])[0] == "3d"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("8h", 28800), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("600", 600)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "0m", "-5"])
def test_parse_duration_rejects(text):
    with pytest.raises(AutosegError):
        parse_duration(text)


def test_schedule_records_budget_without_fitting():
    schedule, why = schedule_rule(3600.0)
    assert (schedule.epochs, schedule.iterations_per_epoch) == (1000, 250)
    assert schedule.time_budget_s == 3600.0 and schedule.source == "default"
    assert "trainer" in why
    assert schedule_rule(None)[0].time_budget_s is None


def test_approximate_memory_is_monotone():
    topo = pooling_topology([1.0, 1.0, 1.0], [64, 64, 64])
    arch = _arch_for(topo)
    a = approximate_memory_gb(arch, (64, 64, 64), 2)
    assert approximate_memory_gb(arch, (64, 64, 64), 3) > a
    assert approximate_memory_gb(arch, (64, 64, 128), 2) > a
    assert math.isfinite(a)


@pytest.mark.parametrize(
    "iterations, name",
    [
        (1, "adamw"),
        (1000, "adamw"),
        (ADAMW_BELOW_ITERATIONS - 1, "adamw"),
        (ADAMW_BELOW_ITERATIONS, "sgd"),
        (250_000, "sgd"),
    ],
)
def test_optimizer_rule_adamw_only_for_short_schedules(iterations, name):
    choice, why = optimizer_rule(iterations)
    assert choice.name == name and str(iterations) in why
    assert choice.initial_lr == (3e-3 if name == "adamw" else 1e-2)


def test_extra_optimizer_state_counts_adamws_second_moment_only():
    assert extra_optimizer_state_gb(2**28, "sgd") == 0.0
    assert extra_optimizer_state_gb(2**28, "adamw") == pytest.approx(1.0)  # 4 bytes each
    with pytest.raises(KeyError):
        extra_optimizer_state_gb(10, "lion")


def test_a_patch_holds_the_case_when_it_is_the_median_case_rounded_down_to_the_stride():
    arch = {"strides": [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [1, 2]]}
    assert total_strides(arch) == [16, 32]
    # usgra-seg on its 4x grid: median frame 120 x 134, patch 112 x 128
    assert patch_holds_case([112, 128], [120, 134], [16, 32])
    assert not patch_holds_case([96, 128], [120, 134], [16, 32])  # one stride short on axis 0
    assert not patch_holds_case([112, 96], [120, 134], [16, 32])
    assert patch_holds_case([128, 160], [120, 134], [16, 32])  # larger than the case: padded
    # a case smaller than one stride: any patch holds it
    assert patch_holds_case([16, 32], [10, 20], [16, 32])
    assert total_strides({"strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}) == [2, 4, 4]
