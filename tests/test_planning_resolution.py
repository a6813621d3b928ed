"""Coarser training grids for short budgets: the rule, the ladder rungs, and whole plans."""

from __future__ import annotations

import math

import numpy as np
import pytest
from planning_helpers import check_budget_plan as _check_budget_plan
from planning_helpers import fake_timer

from autoseg.planning import budget as bd
from autoseg.planning import resolution as rs
from autoseg.planning.patch import approximate_memory_gb
from autoseg.planning.planner import plan_dataset
from autoseg.planning.synthetic import synthetic_fingerprint

# usgra-seg's measured coarsening Dice (means; nerve, vessel), documentation/planning.md
USGRA = {
    "1": {"1.5": 0.9998, "2": 0.997, "3": 0.986, "4": 0.983, "6": 0.971, "8": 0.959},
    "2": {"1.5": 0.9998, "2": 0.998, "3": 0.989, "4": 0.987, "6": 0.978, "8": 0.969},
}


def _stats(means, p10_drop=0.01):
    return {
        k: {f: {"mean": m, "p10": m - p10_drop} for f, m in per.items()} for k, per in means.items()
    }


def test_coarsest_factor_stops_at_the_first_factor_a_label_does_not_survive():
    factor, why = rs.coarsest_factor(_stats(USGRA), ["1", "2"])
    assert factor == 4.0  # 6x: the nerve keeps 0.971 < 0.98
    assert "label 1" in why and "up to 4x" in why
    # the worst tenth counts too
    factor, why = rs.coarsest_factor(_stats(USGRA, p10_drop=0.035), ["1", "2"])
    assert factor == 3.0 and "p10" in why
    # a label no case contains says nothing; a factor a label never reached fails it
    stats = _stats(USGRA)
    stats["3"] = {}
    assert rs.coarsest_factor(stats, ["1", "2", "3"])[0] == 4.0
    del stats["1"]["3"], stats["1"]["4"], stats["1"]["6"], stats["1"]["8"]
    assert rs.coarsest_factor(stats, ["1", "2"])[0] == 2.0
    # nothing measured (an older fingerprint, or synthetic): full resolution only
    assert rs.coarsest_factor(None, ["1"])[0] == 1.0
    assert rs.coarsest_factor({"1": {}}, ["1"])[0] == 1.0
    thin = {"1": {"1.5": 0.97, "2": 0.9}}
    factor, why = rs.coarsest_factor(_stats(thin), ["1"])
    assert factor == 1.0 and "full resolution" in why


def _box_mm(mask, spacing):
    idx = np.argwhere(mask)
    return [float((hi - lo + 1) * sp) for lo, hi, sp in zip(idx.min(0), idx.max(0), spacing)]


@pytest.mark.parametrize("diameter_px", [6, 11, 20, 47])
def test_cross_section_of_rasterised_discs_and_tubes_is_their_diameter(diameter_px):
    """Against the geometry the masks were drawn from: a disc in 2D (one and two components)
    and an oblique tube through an anisotropic stack."""
    r = diameter_px / 2
    yy, xx = np.mgrid[:128, :160]
    disc = (yy - 60.3) ** 2 + (xx - 50.7) ** 2 <= r * r
    spacing = (0.5, 0.5)
    d = rs.cross_section_mm(disc.mean(), disc.shape, spacing, _box_mm(disc, spacing), 1)
    assert d == pytest.approx(diameter_px * 0.5, rel=0.06)
    two = disc | ((yy - 60.3) ** 2 + (xx - 120.2) ** 2 <= r * r)
    d2 = rs.cross_section_mm(two.mean(), two.shape, spacing, _box_mm(two, spacing), 2)
    assert d2 == pytest.approx(diameter_px * 0.5, rel=0.06)  # each of the two
    # a tube along the slice axis, drifting in-plane from slice to slice (3 x 0.75 x 0.75 mm)
    zz = np.arange(24)[:, None, None]
    tube = (yy[None] - 60 - zz) ** 2 + (xx[None] - 50 - 0.5 * zz) ** 2 <= r * r
    sp3 = (3.0, 0.75, 0.75)
    d3 = rs.cross_section_mm(tube.mean(), tube.shape, sp3, _box_mm(tube, sp3), 1)
    assert d3 == pytest.approx(diameter_px * 0.75, rel=0.06)
    assert rs.cross_section_mm(0.0, disc.shape, spacing, None, 0) is None


def test_size_factor_keeps_the_median_cross_section_above_the_pixel_floor():
    floor = rs.MIN_CROSS_SECTION_PX
    # usgra-seg's nerve, 81 px across at 1 mm: 4x (20 px), not 6x (13.5 px)
    factor, why = rs.size_factor({"1": [60.0, 81.2, 95.0], "2": [94.0]}, 1.0)
    assert factor == 4.0 and "label 1" in why and "up to 4x" in why
    # the thigh phantom's nerve, 8.2 mm = 10.9 px at 0.75 mm: not even 1.5x
    factor, why = rs.size_factor({"1": [8.15]}, 0.75)
    assert factor == 1.0 and "under 16 px at 1.5x" in why
    # exactly at the floor is allowed; the smallest label decides
    assert rs.size_factor({"1": [floor * 3.0], "2": [floor * 8.0]}, 1.0)[0] == 3.0
    assert rs.size_factor({"1": [floor * 2.999]}, 1.0)[0] == 2.0
    assert rs.size_factor({"1": []}, 1.0)[0] == math.inf


def test_coarser_spacing_stops_at_the_thick_axis():
    assert rs.coarser_spacing([1.0, 1.0], 2.0) == (2.0, 2.0)
    assert rs.coarser_spacing([3.0, 0.75, 0.75], 2.0) == (3.0, 1.5, 1.5)
    assert rs.coarser_spacing([3.0, 0.75, 0.75], 8.0) == (3.0, 3.0, 3.0)
    assert rs.coarser_spacing([0.75, 0.75], 8.0, cap=3.0) == (3.0, 3.0)  # a 2D slice of it
    assert rs.coarser_spacing([1.0, 1.0, 1.0], 3.0) == (3.0, 3.0, 3.0)  # isotropic: no cap
    assert rs.useful_factors([3.0, 0.75, 0.75], 8.0) == [1.5, 2.0, 3.0, 4.0]
    assert rs.useful_factors([1.0, 1.0], 3.0) == [1.5, 2.0, 3.0]
    assert rs.useful_factors([1.0, 1.0], 1.0) == []


def _frame(coarsening=USGRA):
    return synthetic_fingerprint(
        "960_Frame",
        [480, 534],
        [1.0, 1.0],
        n_cases=40,
        modality="ultrasound",
        labels={"background": 0, "nerve": 1, "vessel": 2},
        foreground_fraction={"1": 0.03, "2": 0.04},
        foreground_extent_mm={"1": [90.0, 160.0], "2": [100.0, 130.0]},
        coarsening_dice=coarsening,
    )


def _plan(fp, **kw):
    kw.setdefault("gpu_memory_gb", 8)
    kw.setdefault("device", "cpu")
    kw.setdefault("estimator", approximate_memory_gb)
    return plan_dataset(fp, **kw)


def test_resolution_rungs_come_after_the_batch_and_before_the_widths():
    plan = _plan(_frame())
    config = plan.configurations["2d"]
    grids = [
        rs.Resolution(f, rs.coarser_spacing(config.spacing, f), (round(480 / f), round(534 / f)))
        for f in (1.5, 2.0, 4.0)
    ]
    floor = bd.patch_floor(config.patch_size, config.spacing, [90.0, 160.0])
    ladder = bd.time_ladder(config, floor, resolutions=grids, extent_mm=[90.0, 160.0])
    changes = [c.change.split(" ")[0] for c in ladder]
    first_grid = changes.index("spacing")
    assert set(changes[1:first_grid]) <= {"batch"} and ladder[first_grid - 1].batch == 2
    assert changes[first_grid : first_grid + 3] == ["spacing"] * 3
    assert changes[first_grid + 3 : first_grid + 5] == ["features"] * 2
    for c in ladder[first_grid:]:
        assert c.resolution is not None and c.batch == 2
    # the coarser rungs keep the field of view in mm (448x512 at 1 mm -> 112x128 at 4 mm)
    four = ladder[first_grid + 2]
    assert four.resolution.factor == 4.0 and list(four.patch) == [112, 128]
    assert four.architecture["features_per_stage"][0] == 32  # the memory rule's widths
    # later rungs stay on the coarsest grid, the patch floor recomputed there
    assert all(c.resolution.factor == 4.0 for c in ladder[first_grid + 2 :])
    tiers = [c.tier for c in ladder]
    assert tiers == sorted(tiers) and tiers[first_grid + 4] == bd.FREE
    # activations (the time model) fall down the free rungs
    acts = [bd.activation_count(c.architecture, c.patch, c.batch) for c in ladder]
    assert all(a >= b for a, b in zip(acts[: first_grid + 5], acts[1 : first_grid + 5]))


def test_short_cpu_budget_trains_on_a_coarser_grid_one_split():
    timer = fake_timer(30.0)  # usgra-seg's measured 4x step: ~21 ns per activation
    plan = _plan(_frame(), time_budget_s=1500.0, step_timer=timer)
    _check_budget_plan(plan, 1500.0, timer)
    c = plan.configurations["2d"]
    assert plan.schedule.folds == [0]
    assert 1.0 < c.spacing[0] <= 4.0 and c.spacing[0] == c.spacing[1]
    assert "coarser along the fine axes" in c.why["spacing"]
    assert "coarsening Dice" in plan.why["resolution"]
    iterations = c.schedule.epochs * c.schedule.iterations_per_epoch
    assert iterations >= bd.TARGET_ITERATIONS
    assert c.median_shape == [round(480 / c.spacing[0]), round(534 / c.spacing[1])]
    # without the statistic (an older fingerprint) the same budget stays at full resolution
    old = _plan(_frame(coarsening=None), time_budget_s=1500.0, step_timer=timer)
    assert old.configurations["2d"].spacing == [1.0, 1.0]
    assert "full resolution only" in old.why["resolution"]


def _small_nerve_frame():
    """The frames above with a nerve 12 px across (median cross-section): every coarser grid
    is under the 16-pixel floor."""
    fp = _frame()
    for case in fp["cases"]:
        case["class_voxel_fraction"] = {"1": 113.0 / (480 * 534), "2": 0.04}
    return fp


@pytest.mark.parametrize("budget_s", [1500.0, 6000.0, 30000.0, 3e5])
def test_a_grid_under_the_pixel_floor_is_a_last_resort_never_bought_for_five_folds(
    budget_s, monkeypatch
):
    timer = fake_timer(30.0)
    plan = _plan(_small_nerve_frame(), time_budget_s=budget_s, step_timer=timer)
    _check_budget_plan(plan, budget_s, timer)
    assert "label 1's median cross-section" in plan.why["resolution"]
    assert "only as a last resort" in plan.why["resolution"]
    c = plan.configurations["2d"]
    iterations = c.schedule.epochs * c.schedule.iterations_per_epoch
    if plan.schedule.folds is None:  # five folds: on the full grid
        assert c.spacing == [1.0, 1.0] and iterations >= bd.TARGET_ITERATIONS
    elif c.spacing == [1.0, 1.0]:  # one split on the full grid: it reaches the target there
        assert iterations >= bd.TARGET_ITERATIONS
    else:  # a small grid: one split, because the full grid alone could not reach the target
        monkeypatch.setattr(rs, "FACTORS", ())
        full = _plan(_small_nerve_frame(), time_budget_s=budget_s, step_timer=timer)
        f = full.configurations["2d"]
        assert f.schedule.epochs * f.schedule.iterations_per_epoch < bd.TARGET_ITERATIONS
    # the same frames with a nerve 99 px across train on coarser grids at these budgets
    large = _plan(_frame(), time_budget_s=budget_s, step_timer=timer).configurations["2d"]
    if budget_s == 30000.0:
        assert large.spacing[0] > 1.0 and c.spacing == [1.0, 1.0]


def test_generous_gpu_budget_keeps_the_memory_plan_and_five_folds():
    reference = _plan(_frame(), device="cuda")
    timer = fake_timer(0.001, 1e-4)
    plan = _plan(_frame(), device="cuda", time_budget_s=1e9, step_timer=timer)
    assert plan.schedule.folds is None  # cross-validation, the ensemble of five
    ref, c = reference.configurations["2d"], plan.configurations["2d"]
    assert (c.spacing, c.patch_size, c.batch_size, c.architecture) == (
        ref.spacing,
        ref.patch_size,
        ref.batch_size,
        ref.architecture,
    )
    _check_budget_plan(plan, 1e9, timer)


@pytest.mark.parametrize("budget_s", [300.0, 1500.0, 6000.0, 30000.0, 3e5])
def test_more_budget_never_plans_a_smaller_model_on_the_same_folds(budget_s):
    timer = fake_timer(30.0)
    small = _plan(_frame(), time_budget_s=budget_s, step_timer=timer)
    big = _plan(_frame(), time_budget_s=2 * budget_s, step_timer=timer)
    _check_budget_plan(small, budget_s, timer)
    _check_budget_plan(big, 2 * budget_s, timer)
    a, b = small.configurations["2d"], big.configurations["2d"]
    if small.schedule.folds == big.schedule.folds:
        key = [
            (-c.spacing[0], c.architecture["features_per_stage"][0], math.prod(c.patch_size))
            for c in (a, b)
        ]
        assert key[0] <= key[1]
        ia = a.schedule.epochs * a.schedule.iterations_per_epoch
        ib = b.schedule.epochs * b.schedule.iterations_per_epoch
        assert key[0] < key[1] or ib >= ia
    else:  # one split -> five folds, each reaching the target
        assert small.schedule.folds == [0] and big.schedule.folds is None
        s = b.schedule
        assert s.epochs * s.iterations_per_epoch >= bd.TARGET_ITERATIONS


def test_whole_frames_train_with_per_sample_dice_on_the_grid_the_budget_chose():
    """The loss rule follows the patch the time budget leaves: whole frames (the memory plan's
    448x512 and the 4x grid's 112x128 of 480x534 frames) -> per-sample Dice; a patch the
    budget cut below the frame -> batch Dice again, with the reason."""
    memory = _plan(_frame()).configurations["2d"]
    assert memory.patch_size == [448, 512] and not memory.loss.batch_dice
    assert "per-sample Dice" in memory.why["loss"]
    timer = fake_timer(30.0)
    coarse = _plan(_frame(), time_budget_s=1500.0, step_timer=timer).configurations["2d"]
    assert coarse.spacing[0] > 1.0 and not coarse.loss.batch_dice
    # no coarser grid to go to: the budget cuts the patch below the frame at full resolution
    cut = _plan(_frame(coarsening=None), time_budget_s=600.0, step_timer=timer)
    c = cut.configurations["2d"]
    assert c.spacing == [1.0, 1.0] and c.patch_size[0] < 448
    assert c.loss.batch_dice and "time budget's patch" in c.why["loss"]
    # a dataset with a frame without foreground keeps batch Dice, whole frames or not
    fp = _frame()
    fp["aggregate"]["cases_without_foreground"] = 1
    assert _plan(fp).configurations["2d"].loss.batch_dice


def test_slices_of_volumes_and_whole_volumes_keep_batch_dice():
    fp = synthetic_fingerprint("961_Stack", [24, 96, 96], [3.0, 0.75, 0.75], n_cases=8)
    plan = _plan(fp)
    assert plan.configurations, plan.why
    for name, c in plan.configurations.items():
        assert c.loss.batch_dice == (name != "crop"), name


def test_a_registered_configurations_own_loss_is_kept_under_a_time_budget():
    """Only a loss the planner's rule chose follows the budget's patch; a registered
    configuration that set its own (here Tversky with batch Dice on whole frames) keeps it."""
    from dataclasses import replace

    from autoseg.planning.plan import Loss
    from autoseg.planning.planner import plan_configuration
    from autoseg.planning.registry import CONFIGURATIONS, register_configuration

    saved = dict(CONFIGURATIONS._items)

    @register_configuration("2d_own_loss", dims=(2,))
    def _own(ctx, planned):
        c = plan_configuration(
            ctx, "2d_own_loss", ctx.target, ctx.median_shape,
            dataset_voxels=ctx.total_voxels, fg_fraction=ctx.fg_fraction,
        )  # fmt: skip
        return replace(
            c, loss=Loss(name="tversky", batch_dice=True), why={**c.why, "loss": "mine: tversky"}
        )

    try:
        plan = _plan(
            _frame(), configs="2d_own_loss", time_budget_s=1500.0, step_timer=fake_timer(30.0)
        )
    finally:
        CONFIGURATIONS._items.clear()
        CONFIGURATIONS._items.update(saved)
    c = plan.configurations["2d_own_loss"]
    assert c.spacing[0] > 1.0  # the budget moved it to a coarser grid, whole frames
    assert c.loss == Loss(name="tversky", batch_dice=True) and c.why["loss"] == "mine: tversky"
