"""--time-budget: ladder rules, the fold cost model, the search, and whole plans with fake
timers (property tests); two real-timer tests on tiny networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tiny_us_dataset
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from planning_helpers import check_budget_plan as _check_budget_plan
from planning_helpers import fake_timer

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.networks import ArchitectureConfig
from autoseg.planning import budget as bd
from autoseg.planning import load_plan, plan_dataset, plan_from_dict
from autoseg.planning.patch import MIN_BATCH, approximate_memory_gb
from autoseg.planning.synthetic import synthetic_fingerprint
from autoseg.planning.topology import architecture_block, fit_topology
from autoseg.training.timing import trainer_step_measure, trainer_step_seconds

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
CPU = bd.FoldContext("cpu", n_val_cases=4, image_shape=(160, 160), images_per_case=24)


def _sciatic(**kw):
    return synthetic_fingerprint(
        "901_Sciatic",
        [40, 256, 256],
        [3.0, 0.75, 0.75],
        foreground_extent_mm={"1": [120.0, 10.0, 14.0]},
        **kw,
    )


def _wrist(**kw):
    return synthetic_fingerprint(
        "902_Wrist",
        [256, 320],
        [1.0, 1.0],
        modality="ultrasound",
        foreground_fraction={"1": 0.01},
        foreground_extent_mm={"1": [35.0, 60.0]},
        **kw,
    )


def _plan(fp, **kw):
    kw.setdefault("gpu_memory_gb", 8)
    kw.setdefault("device", "cpu")
    kw.setdefault("estimator", approximate_memory_gb)
    return plan_dataset(fp, **kw)


def _arch(spacing, patch, features_divisor=1):
    patch, topo = fit_topology(spacing, patch)
    arch = architecture_block(topo, network="unet", in_channels=1, num_classes=2)
    return bd.scale_features(arch, features_divisor), tuple(patch)


# ---------------------------------------------------------------- ladder rules


def test_batch_steps_go_down_to_two_by_about_30_percent():
    assert bd.batch_steps(24) == [24, 16, 11, 7, 4, 2]
    assert bd.batch_steps(2) == [2]
    assert bd.batch_steps(3) == [3, 2]
    for b in range(2, 200):
        steps = bd.batch_steps(b)
        assert steps[0] == b and steps[-1] == MIN_BATCH
        assert all(x > y for x, y in zip(steps, steps[1:]))


def test_scale_features_keeps_topology():
    arch, _ = _arch([3.0, 0.75, 0.75], [40, 192, 256])
    half, quarter = bd.scale_features(arch, 2), bd.scale_features(arch, 4)
    assert arch["features_per_stage"][:1] == [32] and max(arch["features_per_stage"]) == 320
    assert half["features_per_stage"][0] == 16 and max(half["features_per_stage"]) == 160
    assert quarter["features_per_stage"][0] == 8 and max(quarter["features_per_stage"]) == 80
    for key in ("strides", "kernel_sizes", "n_blocks_per_stage", "n_conv_per_stage_decoder"):
        assert quarter[key] == arch[key]
    ArchitectureConfig.from_dict(quarter)


def test_patch_floor_two_extents_and_32_in_plane():
    # nerve 10 x 14 mm at 0.75 mm: 27 -> 32 (in-plane minimum) and 38 voxels
    assert bd.patch_floor([256, 256], [0.75, 0.75], [10.0, 14.0]) == [32, 38]
    # a nerve through the whole stack keeps the whole stack along the thick axis
    assert bd.patch_floor([40, 192, 256], [3.0, 0.75, 0.75], [120.0, 10.0, 14.0]) == [40, 32, 38]
    # no foreground: 32 in-plane, the minimal input (8) along the thick axis
    assert bd.patch_floor([40, 192, 256], [3.0, 0.75, 0.75], None) == [8, 32, 32]
    # never above the planned patch
    assert bd.patch_floor([24, 20], [1.0, 1.0], [50.0, 50.0]) == [24, 20]


def _ladder(name="3d_fullres", fp=None):
    plan = _plan(fp or _sciatic())
    config = plan.configurations[name]
    extent = bd.network_extent(plan.fingerprint.foreground_extent_p95_mm, config)
    floor = bd.patch_floor(config.patch_size, config.spacing, extent)
    return config, floor, bd.time_ladder(config, floor)


@pytest.mark.parametrize("name", ["2d", "3d_fullres", "crop"])
def test_ladder_order_batch_then_widths_then_patch(name):
    config, floor, ladder = _ladder(name)
    first = ladder[0]
    assert first.architecture == config.architecture and first.batch == config.batch_size
    assert list(first.patch) == config.patch_size
    batches = [c.batch for c in ladder]
    widths = [c.width_divisor for c in ladder]
    assert batches == sorted(batches, reverse=True) and batches[-1] == MIN_BATCH
    assert widths == sorted(widths) and widths[-1] == bd.WIDTH_DIVISORS[-1]
    # widths shrink only at batch 2, the patch only at a quarter of the widths
    assert all(c.batch == MIN_BATCH for c in ladder if c.width_divisor > 1)
    patch_rungs = [c for c in ladder if tuple(c.patch) != tuple(config.patch_size)]
    assert all(c.width_divisor == bd.WIDTH_DIVISORS[-1] for c in patch_rungs)
    cost = [bd.activation_count(c.architecture, c.patch, c.batch) for c in ladder]
    assert all(a > b for a, b in zip(cost, cost[1:])), "every rung is cheaper"
    for prev, c in zip(ladder, ladder[1:]):
        assert all(q <= p for p, q in zip(prev.patch, c.patch))
        arch = ArchitectureConfig.from_dict(c.architecture)
        assert all(p % d == 0 for p, d in zip(c.patch, arch.required_divisor()))
        assert arch.in_channels == config.architecture["in_channels"]
    # the last rung is at (or, after rounding, just under) the floor on every shrinkable axis
    last = ladder[-1].patch
    assert all(p <= max(f, 1) or p == q for p, f, q in zip(last, floor, config.patch_size))


def test_ladder_goes_below_the_context_floor_only_after_it():
    # a floor as large as the patch (a label box spanning the frame, as in usgra-seg) leaves
    # no patch rungs; the hard floor adds them after every rung above the floor
    config, _, soft = _ladder("2d")
    full = list(config.patch_size)
    hard = bd.patch_floor(config.patch_size, config.spacing, None)
    ladder = bd.time_ladder(config, full, hard)
    no_patch = bd.time_ladder(config, full)
    assert all(tuple(c.patch) == tuple(full) for c in no_patch)

    def key(c):
        return (tuple(c.patch), c.batch, c.width_divisor, c.change)

    assert [key(c) for c in ladder[: len(no_patch)]] == [key(c) for c in no_patch]
    extra = ladder[len(no_patch) :]
    assert extra and all("below the context floor" in c.change for c in extra)
    assert all(p >= h for c in extra for p, h in zip(c.patch, hard))
    assert len(extra) >= len(soft) - len(no_patch)  # reaches at least as far down as before
    cost = [bd.activation_count(c.architecture, c.patch, c.batch) for c in ladder]
    assert all(a > b for a, b in zip(cost, cost[1:]))


def test_ladder_drops_a_stage_when_an_axis_gets_short():
    _, _, ladder = _ladder("2d")
    stages = [len(c.architecture["features_per_stage"]) for c in ladder]
    assert stages[0] == 7 and stages[-1] < stages[0]
    assert stages == sorted(stages, reverse=True)


# ---------------------------------------------------------------- the fold cost model


def test_window_count_matches_the_predictor():
    from autoseg.inference.sliding_window import window_starts

    rng = np.random.default_rng(0)
    for _ in range(200):
        dim = int(rng.integers(2, 4))
        image = [int(v) for v in rng.integers(4, 400, dim)]
        patch = [int(v) for v in rng.integers(4, 300, dim)]
        expected = math.prod(len(window_starts(s, p, 0.5)) for s, p in zip(image, patch))
        assert bd.window_count(image, patch) == expected


def test_loader_adds_on_cpu_and_overlaps_on_gpu():
    small = bd.loader_seconds("cpu", 2, (64, 64), 1)
    big = bd.loader_seconds("cpu", 2, (24, 160, 160), 1)
    assert 0.5e-3 < small < 2e-3 and 0.03 < big < 0.08  # the bench_dataloader numbers
    # CPU: loader workers take cores from the step (+15 %) and the loader's work adds
    assert bd.iteration_seconds(0.1, 0.02, "cpu") == pytest.approx(0.1 * 1.15 + 0.02)
    assert bd.iteration_seconds(0.1, 0.02, "cuda") == 0.1
    assert bd.iteration_seconds(0.01, 0.1, "cuda") == pytest.approx(0.1 / bd.GPU_LOADER_WORKERS)


def test_fold_schedule_fits_the_fold_and_caps_at_nnunet_length():
    huge = bd.fold_schedule(1e9, 0.1, 2, (128, 128), 1, CPU)
    assert (huge.epochs, huge.iterations_per_epoch) == (bd.MAX_EPOCHS, 250)
    for fold_s in (20.0, 60.0, 600.0, 7200.0, 86400.0):
        for step in (0.005, 0.05, 0.5):
            s = bd.fold_schedule(fold_s, step, 2, (128, 128), 1, CPU)
            if s.epochs == 0:  # validation alone exceeds the fold: nothing is planned
                assert not bd.schedule_fits(s)
                continue
            used = s.predicted_train_s + s.validation_s + bd.reserve_seconds(fold_s, "cpu")
            assert used <= fold_s * (1 + 1e-9)
            assert s.iterations_per_epoch <= 250 and s.epochs <= 1000
            if s.iterations >= bd.MIN_ITERATIONS:
                assert s.epochs >= bd.MIN_EPOCHS  # the pseudo-Dice rhythm
    # more time never buys fewer iterations; a slower step never buys more
    its = [bd.fold_schedule(f, 0.05, 2, (128, 128), 1, CPU).iterations for f in (30, 60, 120)]
    assert its == sorted(its)
    its = [bd.fold_schedule(300, t, 2, (128, 128), 1, CPU).iterations for t in (0.01, 0.1, 1)]
    assert its == sorted(its, reverse=True)


def test_validation_grows_with_slices_cases_and_smaller_patches():
    one = bd.FoldContext("cpu", 4, (160, 160), 1).validation_seconds(0.1, 2, (160, 160))
    # 4 cases x 1 window x no mirroring on a CPU x 0.3 x 0.1 s / 2 samples
    assert one == pytest.approx(4 * bd.FORWARD_FRACTION * 0.1 / 2)
    gpu = bd.FoldContext("cuda", 4, (160, 160), 1).validation_seconds(0.1, 2, (160, 160))
    assert gpu == pytest.approx(4 * one)  # 4 mirrorings in 2D on a GPU
    slices = bd.FoldContext("cpu", 4, (160, 160), 24).validation_seconds(0.1, 2, (160, 160))
    assert slices == pytest.approx(24 * one)
    assert CPU.validation_seconds(0.1, 2, (64, 64)) > CPU.validation_seconds(0.1, 2, (160, 160))


# ---------------------------------------------------------------- the search


def _rungs(n):
    return [bd.Candidate({"i": i}, (8,), 2, 1, f"rung {i}") for i in range(n)]


def test_first_fitting_finds_the_first_fitting_rung_with_few_measurements():
    ladder = _rungs(40)
    times = {id(c): 100.0 / (i + 1) for i, c in enumerate(ladder)}  # rung i: 100/(i+1) s
    calls = []

    def timer(arch, patch, batch):
        calls.append(arch["i"])
        return times[id(ladder[arch["i"]])]

    for limit in (100.0, 10.0, 3.0, 2.5, 1.0):
        calls.clear()
        fits = lambda c, t, lim=limit: t <= lim  # noqa: E731
        found = bd.first_fitting(ladder, timer, fits, screen_factor=None)
        expected = next((i for i in range(40) if 100.0 / (i + 1) <= limit), None)
        assert found.index == expected
    assert bd.first_fitting(ladder, timer, lambda c, t: t <= 0.1).index is None


@pytest.mark.parametrize(
    "fitting, expected",
    [({4, 9, 10}, 4), ({5, 6}, 5), ({2, 15}, 2), (set(), None)],
)
def test_first_fitting_when_fitting_is_not_monotone(fitting, expected):
    """Fitting can fail again further down (validation grows as the patch shrinks); the
    necessary condition (training alone fits) is monotone: rungs >= 2."""
    ladder = _rungs(16)
    found = bd.first_fitting(
        ladder,
        lambda a, p, b: float(a["i"]),
        lambda c, t: t in fitting,
        lambda c, t: t >= 2,
        screen_factor=None,
    )
    assert found.index == expected


def test_screening_skips_slow_rungs_without_measuring_them():
    config, _, ladder = _ladder("3d_fullres")
    timer = fake_timer()
    limit = timer(ladder[-1].architecture, ladder[-1].patch, 2) * 1.5  # only small rungs fit
    plain = bd.first_fitting(ladder, fake_timer(), lambda c, t: t <= limit, screen_factor=None)
    timer.calls = 0
    screened = bd.first_fitting(ladder, timer, lambda c, t: t <= limit, screen_factor=4.0)
    assert screened.index == plain.index  # the fake timer is activation-proportional
    assert timer.calls == len(screened.measured)
    assert screened.screened and not set(screened.screened) & set(screened.measured)
    # nothing slower than 4x what fits was run; without screening the bisection ran worse
    assert max(screened.measured.values()) <= 4 * limit
    assert max(plain.measured.values()) > 4 * limit


def test_keep_order_and_sets():
    names = ["2d", "2.5d", "3d_fullres", "crop"]
    order = bd.keep_order(names, "2d")
    assert order == ["crop", "2d", "3d_fullres", "2.5d"]
    assert bd.runnable(order, "2d") == order
    assert bd.runnable(["crop", "3d_fullres"], "2d") == ["2d", "3d_fullres"]  # needs its localiser
    assert bd.runnable(["crop"], "2d") == ["2d"]
    assert bd.keep_order(["2d", "2.5d", "3d_fullres"], None) == ["3d_fullres", "2d", "2.5d"]
    assert bd.keep_order(["2d"], None) == ["2d"]


# ---------------------------------------------------------------- whole plans


def _size(c):
    return (c.batch_size, c.architecture["features_per_stage"][0], math.prod(c.patch_size))


def _below_floor(c):
    return "chosen below the context floor" in c.why.get("time_budget", "")


def _iterations(c):
    return c.schedule.epochs * c.schedule.iterations_per_epoch


def _rung_key(plan, c):
    """Non-increasing down the time ladder (batch, coarser grids, widths, patch): a larger
    budget stops on an earlier rung, i.e. a key at least as large."""
    target = list(plan.target_spacing)
    if c.dim < plan.dim:
        del target[c.slice_axis]
    factor = max(a / b for a, b in zip(c.spacing, target))
    features = c.architecture["features_per_stage"][0]
    return (-round(factor, 6), features, math.prod(c.patch_size), c.batch_size)


# Cases hypothesis found: twice the budget keeps 3d_fullres alone at its full patch (accepted),
# and a tiny budget keeps 3d_fullres shrunk to 8x8x32 where twice it prefers a full 2d (xfail).
_THIGH_LIKE = dict(spacing=(1.0, 1.0, 0.5), fraction=0.1, extent_share=0.5)
BIGGER_BUDGET_GROWS_3D = dict(
    shape=(8, 48, 48), budget_s=842.0, speed=30.0, device="cuda", **_THIGH_LIKE
)
TINY_BUDGET_SHRUNKEN_3D = dict(
    shape=(40, 48, 48), budget_s=74.0, speed=0.3, device="cpu", **_THIGH_LIKE
)
spacing_3d = st.tuples(st.floats(0.5, 5.0), st.floats(0.3, 1.5), st.floats(0.3, 1.5))
shape_3d = st.tuples(st.integers(8, 80), st.integers(48, 384), st.integers(48, 384))


# derandomize: CI checks the same 25 cases every run. Random search found budgets (74 s on a
# slow CPU) where the planner keeps a 3d_fullres shrunk to 8x8x32 and twice the budget
# prefers a full-size 2d — the small plan is the odd one; see the xfail test below.
@settings(max_examples=25, derandomize=True, **SETTINGS)
@given(
    shape=shape_3d,
    spacing=spacing_3d,
    fraction=st.floats(-4.0, -1.0).map(lambda e: 10**e),
    extent_share=st.floats(0.03, 0.5),
    budget_s=st.floats(60.0, 1e6),
    speed=st.sampled_from([0.3, 3.0, 30.0]),
    device=st.sampled_from(["cpu", "cuda"]),
)
@example(**BIGGER_BUDGET_GROWS_3D)
def test_random_3d_budget_plans(shape, spacing, fraction, extent_share, budget_s, speed, device):
    extent = [max(v * s * extent_share, s) for v, s in zip(shape, spacing)]
    fp = synthetic_fingerprint(
        "950_Random",
        list(shape),
        [round(v, 3) for v in spacing],
        n_cases=10,
        foreground_fraction={"1": fraction},
        foreground_extent_mm={"1": extent},
        seed=1,
    )
    timer = fake_timer(speed)
    try:
        plan = _plan(fp, time_budget_s=budget_s, step_timer=timer, device=device)
    except AutosegError as exc:
        assert "--time-budget" in exc.fix
        return
    _check_budget_plan(plan, budget_s, timer)
    # twice the budget: at least the same configurations, none smaller when the set is equal
    bigger = _plan(fp, time_budget_s=2 * budget_s, step_timer=timer, device=device)
    _check_budget_plan(bigger, 2 * budget_s, timer)
    if "time_budget_warning" in plan.why:  # best effort: one configuration, few iterations
        assert len(plan.configurations) == 1
        return
    # a bigger budget keeps a superset, or affords a configuration ranked higher by the keep
    # order (3d_fullres alone instead of 2d alone when both do not fit together), or grows the
    # best-ranked configuration both keep (3d_fullres at its full patch alone instead of a
    # shrunken 3d_fullres beside 2d)
    # A bigger budget may also buy more folds (one split -> 5-fold cross-validation, once
    # each fold reaches TARGET_ITERATIONS): then its rungs may be smaller, by design.
    assert not (plan.schedule.folds is None and bigger.schedule.folds is not None)
    if plan.schedule.folds != bigger.schedule.folds:
        return
    small, big = set(plan.configurations), set(bigger.configurations)
    if not small <= big:
        rank = bd.keep_order(sorted(small | big), None)
        top_big, top_small = (min(rank.index(n) for n in names) for names in (big, small))
        if top_big == top_small:
            best = rank[top_big]
            grown = (
                _rung_key(bigger, bigger.configurations[best]),
                _rung_key(plan, plan.configurations[best]),
            )
            assert grown[0] > grown[1], best
        elif top_big > top_small:
            # A less preferred configuration may replace a more preferred one that only fitted
            # with less: one reaching TARGET_ITERATIONS replaces one that did not (below the
            # target, iterations come before the keep order), one above its context floor
            # replaces one cut below it (the last resort of budget_passes).
            reached = all(_iterations(c) >= bd.TARGET_ITERATIONS for c in kept_configs(bigger))
            short = any(_iterations(c) < bd.TARGET_ITERATIONS for c in kept_configs(plan))
            cut = any(_below_floor(c) for c in kept_configs(plan))
            whole = not any(_below_floor(c) for c in kept_configs(bigger))
            assert (reached and short) or (cut and whole)
    if small == big:
        for name, c in plan.configurations.items():
            d = bigger.configurations[name]
            assert _rung_key(plan, c) <= _rung_key(bigger, d), name


def test_tiny_budget_does_not_keep_a_shrunken_3d_over_a_full_2d():
    # Was a strict xfail: five folds of 74 s kept 3d_fullres shrunk to 8x8x32 where twice the
    # budget preferred a full-size 2d. A budget that short now trains one split of one
    # configuration (budget_passes), which affords 3d_fullres at its full 40x48x48 patch.
    test_random_3d_budget_plans.hypothesis.inner_test(**TINY_BUDGET_SHRUNKEN_3D)


@settings(max_examples=25, **SETTINGS)
@given(
    budget_s=st.floats(30.0, 1e6),
    speed=st.sampled_from([1.0, 10.0, 100.0]),
    shape=st.tuples(st.integers(64, 700), st.integers(64, 700)),
    width=st.one_of(st.none(), st.floats(4.0, 200.0)),
)
def test_2d_budget_is_monotone(budget_s, speed, shape, width):
    # width: how many pixels the structure spans, which sets how coarse a grid it survives
    # (round-trip Dice ~ 1 - 0.2 f / width); None: a fingerprint without the statistic
    coarsening = None
    if width is not None:
        coarsening = {"1": {f"{f:g}": max(0.0, 1 - 0.2 * f / width) for f in bd_factors()}}
    fp = synthetic_fingerprint(
        "951_Random2D",
        list(shape),
        [1.0, 1.0],
        n_cases=30,
        modality="ultrasound",
        foreground_fraction={"1": 0.01},
        foreground_extent_mm={"1": [shape[0] / 8, shape[1] / 6]},
        coarsening_dice=coarsening,
    )
    timer = fake_timer(speed)
    plans = []
    for b in (budget_s, 3 * budget_s):
        try:
            plan = _plan(fp, time_budget_s=b, step_timer=timer)
        except AutosegError:
            plans.append(None)
            continue
        _check_budget_plan(plan, b, timer)
        plans.append(None if "time_budget_warning" in plan.why else plan)
    small, big = plans
    if small is None:
        return
    assert big is not None
    # more budget: five folds instead of one split (each fold at the target), or the same
    # folds and a rung at least as early on the ladder
    assert not (small.schedule.folds is None and big.schedule.folds is not None)
    if small.schedule.folds == big.schedule.folds:
        a, b = small.configurations["2d"], big.configurations["2d"]
        assert _rung_key(small, a) <= _rung_key(big, b)


def bd_factors():
    from autoseg.planning.resolution import FACTORS

    return FACTORS


def test_huge_budget_on_a_fast_device_keeps_the_memory_plan():
    reference = _plan(_sciatic(), device="cuda")
    timer = fake_timer(0.001, 1e-4)
    plan = _plan(_sciatic(), device="cuda", time_budget_s=1e9, step_timer=timer)
    assert list(plan.configurations) == list(reference.configurations)
    for name, c in plan.configurations.items():
        ref = reference.configurations[name]
        assert (c.patch_size, c.batch_size, c.architecture) == (
            ref.patch_size,
            ref.batch_size,
            ref.architecture,
        )
        assert (c.schedule.epochs, c.schedule.iterations_per_epoch) == (1000, 250)
        assert "kept" in c.why["time_budget"]
    assert (plan.schedule.epochs, plan.schedule.iterations_per_epoch) == (1000, 250)
    _check_budget_plan(plan, 1e9, timer)


def test_small_cpu_budget_shrinks_and_drops_configurations():
    timer = fake_timer(10.0)  # ~a 2-core CPU
    plan = _plan(_sciatic(), time_budget_s=600.0, step_timer=timer)
    _check_budget_plan(plan, 600.0, timer)
    kept = list(plan.configurations)
    assert len(kept) < 4 and ("crop" not in kept or "2d" in kept)
    assert "dropped" in plan.why["configurations"]
    for c in plan.configurations.values():
        why = c.why["time_budget"]
        assert "shrunk" in why and " s/iteration" not in why.split("->")[0]
        assert c.batch_size == MIN_BATCH and c.architecture["features_per_stage"][0] < 32
        assert "time budget ->" in c.why["batch_size"] + c.why["patch_size"]
    # dropping configurations comes before patches below the context floor
    assert all("below the context floor" not in c.why["time_budget"] for c in kept_configs(plan))
    # a more generous budget keeps more
    more = _plan(_sciatic(), time_budget_s=6 * 3600.0, step_timer=timer)
    assert set(kept) <= set(more.configurations) and len(more.configurations) >= len(kept)


def kept_configs(plan):
    return list(plan.configurations.values())


def test_below_the_context_floor_only_when_nothing_fits_above_it():
    # the whole frame as the floor (a label box spanning the image, as in usgra-seg): the
    # budget buys 1000 iterations only with a smaller patch, so the plan goes below the floor
    fp = synthetic_fingerprint(
        "951_Frame", [480, 534], [1.0, 1.0], foreground_extent_mm={"1": [470.0, 520.0]}
    )
    timer = fake_timer(10.0)
    plan = _plan(fp, time_budget_s=240.0, step_timer=timer)
    assert "time_budget_warning" not in plan.why
    (c,) = kept_configs(plan)
    assert "chosen below the context floor" in c.why["time_budget"]
    assert c.schedule.epochs * c.schedule.iterations_per_epoch >= bd.MIN_ITERATIONS
    assert math.prod(c.patch_size) < 448 * 512
    _check_budget_plan(plan, 240.0, timer)


def test_too_small_budget_plans_best_effort_with_a_warning():
    from autoseg.planning.schedule import parse_duration

    timer = fake_timer(10.0)
    plan = _plan(_sciatic(), time_budget_s=24.0, step_timer=timer)
    warning = plan.why["time_budget_warning"]
    assert "too short" in warning and "may not learn" in warning
    assert len(plan.configurations) == 1 and "crop" not in plan.configurations
    _check_budget_plan(plan, 24.0, timer)
    c = next(iter(plan.configurations.values()))
    assert 1 <= c.schedule.epochs * c.schedule.iterations_per_epoch < bd.MIN_ITERATIONS
    # the budget the warning names is enough
    named = warning.split("give --time-budget ")[1].split(" ")[0]
    enough = _plan(_sciatic(), time_budget_s=parse_duration(named), step_timer=timer)
    assert "time_budget_warning" not in enough.why
    _check_budget_plan(enough, parse_duration(named), timer)


def test_budget_below_the_validation_time_is_an_error():
    with pytest.raises(AutosegError, match="cannot train any configuration") as info:
        _plan(_sciatic(), time_budget_s=8.0, step_timer=fake_timer(10.0))
    assert "--time-budget" in info.value.fix


def test_plans_without_budget_do_not_change_form():
    plan = _plan(_wrist())
    d = plan.to_dict()
    assert "fold_budget_s" not in d["schedule"]
    assert "measured_step_s" not in d["configurations"]["2d"]
    assert "schedule" not in d["configurations"]["2d"]
    timed = _plan(_wrist(), time_budget_s=3600.0, step_timer=fake_timer())
    t = timed.to_dict()
    assert t["configurations"]["2d"]["schedule"]["epochs"] >= 1
    n_folds = bd.N_FOLDS if t["schedule"].get("folds") is None else len(t["schedule"]["folds"])
    assert t["schedule"]["fold_budget_s"] == pytest.approx(3600.0 / n_folds)


# ---------------------------------------------------------------- real timer


def test_real_timer_on_tiny_networks(one_thread):
    small, p_small = _arch([1.0, 1.0], [16, 16], 4)
    large, p_large = _arch([1.0, 1.0], [128, 128], 2)
    t_small = trainer_step_seconds(small, p_small, 2, max_seconds=0.5)
    t_large = trainer_step_seconds(large, p_large, 4, max_seconds=1.0)
    assert 0 < t_small < 1.0
    assert t_large > 2 * t_small  # ~60x the activations
    timer = bd.MeasuredStepTimer(trainer_step_measure(), "cpu", max_seconds=0.3)
    assert timer(small, p_small, 2) == timer(small, p_small, 2) and len(timer.cache) == 1


def test_time_step_takes_the_median_and_counts_a_long_cpu_warm_up_as_the_measurement(
    monkeypatch,
):
    clock = {"t": 0.0}
    monkeypatch.setattr(bd.time, "perf_counter", lambda: clock["t"])

    def steps(durations):
        it = iter(durations)

        def step():
            clock["t"] += next(it)

        return step

    # warm-up 0.5 s (under the 10 s cap), then 5 timed steps: median of 0.1 0.3 0.2 0.9 0.4
    assert bd.time_step(
        steps([0.5, 0.1, 0.3, 0.2, 0.9, 0.4]), "cpu", max_seconds=10.0
    ) == pytest.approx(0.3)
    # a 13 s warm-up beyond the 2 s cap is the measurement: no second step is run
    assert bd.time_step(steps([13.0]), "cpu", max_seconds=2.0) == 13.0
    # the cap ends the timed steps early (3 s cap: warm-up 1, then 1.5 and 1 -> stop)
    assert bd.time_step(steps([1.0, 1.5, 1.0, 9.9]), "cpu", max_seconds=3.0) == pytest.approx(1.25)
    # a GPU: a 5 s warm-up beyond the 4 s cap still gets one timed step; synchronized each
    synced = []
    gpu = bd.time_step(
        steps([5.0, 2.0, 2.0]), "cuda", max_seconds=4.0, synchronize=lambda: synced.append(1)
    )
    assert gpu == pytest.approx(2.0) and len(synced) == 2


def test_real_timer_keeps_the_faster_thread_count_and_restores_the_setting():
    import torch

    small, p_small = _arch([1.0, 1.0], [16, 16], 4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls: list[int] = []
        real = trainer_step_measure()

        def spy(*args, **kw):
            calls.append(torch.get_num_threads())
            return real(*args, **kw)

        timer = bd.MeasuredStepTimer(spy, "cpu", max_seconds=0.2)
        seconds = timer(small, p_small, 2)
        timer(small, p_small, 2)  # cached: not measured again
        # the process's setting, one thread, then channels last with the faster of the two
        assert calls[:2] == [2, 1] and calls[2:] == [timer.threads(small, p_small, 2)]
        assert torch.get_num_threads() == 2
        assert timer.threads(small, p_small, 2) in (1, 2) and seconds > 0
        assert timer.threads(small, p_small, 3) is None  # never measured
        assert bd.MeasuredStepTimer(spy, "cuda").threads(small, p_small, 2) is None
    finally:
        torch.set_num_threads(before)


def test_real_timer_with_one_thread_measures_once(one_thread):
    small, p_small = _arch([1.0, 1.0], [16, 16], 4)
    timer = bd.MeasuredStepTimer(trainer_step_measure(), "cpu", max_seconds=0.2)
    timer(small, p_small, 2)
    assert timer.threads(small, p_small, 2) == 1
    # both layouts were timed; the faster one counts and is recorded
    assert timer.channels_last(small, p_small, 2) in (True, False)
    assert timer.channels_last(small, p_small, 4) is None  # not measured


def test_real_timer_records_the_faster_layout(one_thread):
    small, p_small = _arch([1.0, 1.0], [16, 16], 4)
    asked = []

    def fake(arch, patch, batch, *, channels_last=False, **kw):
        asked.append(channels_last)
        return 0.1 if channels_last else 0.2

    timer = bd.MeasuredStepTimer(fake, "cpu")
    assert timer(small, p_small, 2) == 0.1 and timer.channels_last(small, p_small, 2) is True
    assert asked == [False, True]
    fp = _wrist()
    plan = _plan(fp, time_budget_s=600.0, step_timer=timer)
    c = plan.configurations["2d"]
    assert c.schedule.channels_last is True and "channels-last" in c.why["channels_last"]
    assert plan_from_dict(plan.to_dict()) == plan


def test_a_budget_plan_without_a_step_to_time_says_how_to_get_one():
    with pytest.raises(AutosegError, match="step to time") as err:
        _plan(_wrist(), time_budget_s=600.0)
    assert "trainer_step_measure" in err.value.fix


def test_budget_plans_choose_the_optimizer_by_schedule_length():
    from autoseg.planning.schedule import ADAMW_BELOW_ITERATIONS

    short = _plan(_wrist(), time_budget_s=300.0, step_timer=fake_timer())
    long = _plan(_wrist(), time_budget_s=400 * 3600.0, step_timer=fake_timer())
    for plan in (short, long):
        s = plan.configurations["2d"].schedule
        total = s.epochs * s.iterations_per_epoch
        assert s.optimizer == ("adamw" if total < ADAMW_BELOW_ITERATIONS else "sgd")
        assert s.cpu_threads is None  # a fake timer measures no threads
        assert "optimizer_rule" in plan.configurations["2d"].why["optimizer"]
    assert short.configurations["2d"].schedule.optimizer == "adamw"
    assert long.configurations["2d"].schedule.optimizer == "sgd"
    # The estimates count SGD's one momentum buffer; AdamW's second moment is added on top.
    for plan, extra_copies in ((short, 1), (long, 0)):
        c = plan.configurations["2d"]
        base = approximate_memory_gb(c.architecture, tuple(c.patch_size), c.batch_size)
        extra = extra_copies * 4 * c.parameters / 2**30
        assert c.parameters > 0 and c.estimated_memory_gb == pytest.approx(base + extra, abs=2e-3)
    assert "second moment" in short.configurations["2d"].why["optimizer"]
    again = plan_from_dict(short.to_dict())
    assert again.configurations["2d"].schedule == short.configurations["2d"].schedule
    from autoseg.training.run import options_from_plan

    opts = options_from_plan(short, "2d")
    assert (opts.optimizer, opts.initial_lr) == ("adamw", 3e-3)


def test_budget_schedules_written_before_the_optimizer_field_read_as_sgd():
    d = _plan(_wrist(), time_budget_s=1800.0, step_timer=fake_timer()).to_dict()
    block = d["configurations"]["2d"]["schedule"]
    for key in ("optimizer", "initial_lr", "weight_decay", "cpu_threads"):
        del block[key]
    s = plan_from_dict(d).configurations["2d"].schedule
    assert (s.optimizer, s.initial_lr, s.weight_decay, s.cpu_threads) == ("sgd", 1e-2, 3e-5, None)
    block["optimizer"] = "adam"
    with pytest.raises(AutosegError, match="optimizer"):
        plan_from_dict(d)


def _tiny_raw_dataset(root):
    return tiny_us_dataset(root, 11, 5)


def test_cli_time_budget_with_the_real_timer(tmp_path, capsys, one_thread):
    _tiny_raw_dataset(tmp_path)
    argv = ["plan", "11", "--root", str(tmp_path), "--time-budget", "30m", "--device", "cpu"]
    assert main(argv + ["--brief"]) == 0
    out = capsys.readouterr().out
    assert "s/iteration measured" in out and "per fold" in out
    plan = load_plan(tmp_path / "preprocessed" / "011_TinyUS" / "plans.json")
    c = plan.configurations["2d"]
    assert plan.schedule.source == "time_budget" and c.measured_step_s > 0
    assert c.schedule.epochs * c.schedule.iterations_per_epoch >= bd.MIN_ITERATIONS
    assert plan.device.type == "cpu"


def test_time_budget_plan_matches_the_json_schema():
    import json
    from pathlib import Path

    from test_planning_plan import _check  # the schema checker of the plan-format tests

    schema_file = Path(__file__).resolve().parents[1] / "plans" / "plan.schema.json"
    schema = json.loads(schema_file.read_text())
    plan = _plan(_sciatic(), time_budget_s=6 * 3600.0, step_timer=fake_timer())
    d = plan.to_dict()
    assert "fold_budget_s" in d["schedule"] and "schedule" in d["configurations"]["2d"]
    _check(d, schema, schema)
    d["configurations"]["2d"]["schedule"]["epochs"] = 0
    with pytest.raises(AssertionError, match="epochs"):
        _check(d, schema, schema)
    with pytest.raises(AutosegError, match="schedule.epochs"):
        plan_from_dict(d)
