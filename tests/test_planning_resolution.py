"""Coarser training grids for short budgets: the rule, the ladder rungs, and whole plans."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("budget_s", [1500.0, 6000.0, 30000.0, 3e5])
def test_ensemble_of_the_same_model_rule_buys_five_folds_only_at_one_splits_rung(
    budget_s, monkeypatch
):
    """With ``ENSEMBLE_OF_SAME_MODEL`` the cross-validation is planned only when each of its
    folds trains the configuration at the rung one split would: otherwise one split."""
    timer = fake_timer(30.0)
    default = _plan(_frame(), time_budget_s=budget_s, step_timer=timer)
    monkeypatch.setattr(bd, "ENSEMBLE_OF_SAME_MODEL", True)
    plan = _plan(_frame(), time_budget_s=budget_s, step_timer=timer)
    _check_budget_plan(plan, budget_s, timer)
    monkeypatch.setattr(bd, "budget_passes", lambda: [p for p in BUDGET_PASSES if p[0] == 1])
    single = _plan(_frame(), time_budget_s=budget_s, step_timer=timer)
    a, b = plan.configurations["2d"], single.configurations["2d"]
    same = (a.spacing, a.patch_size, a.batch_size, a.architecture) == (
        b.spacing,
        b.patch_size,
        b.batch_size,
        b.architecture,
    )
    if plan.schedule.folds is None:  # five folds: each is the one-split model
        assert default.schedule.folds is None and same
    else:  # one split: the one-split plan, whatever the default chose
        assert plan.schedule.folds == [0] and same
        if default.schedule.folds is None:
            d = default.configurations["2d"]
            assert (d.spacing[0], -d.architecture["features_per_stage"][0]) > (
                a.spacing[0],
                -a.architecture["features_per_stage"][0],
            ) or math.prod(d.patch_size) < math.prod(a.patch_size)
            assert "lesser model than one split" in plan.why["configurations"]


def test_ensemble_of_the_same_model_rule_keeps_a_generous_gpu_plan(monkeypatch):
    monkeypatch.setattr(bd, "ENSEMBLE_OF_SAME_MODEL", True)
    timer = fake_timer(0.001, 1e-4)
    plan = _plan(_frame(), device="cuda", time_budget_s=1e9, step_timer=timer)
    assert plan.schedule.folds is None
    assert "-> kept:" in plan.configurations["2d"].why["time_budget"]


BUDGET_PASSES = bd.budget_passes()
