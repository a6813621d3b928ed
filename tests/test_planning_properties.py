"""Property tests over random fingerprints (fake memory estimator: the real one costs ~0.2 s)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoseg.networks import ArchitectureConfig
from autoseg.planning import plan_dataset, plan_from_dict
from autoseg.planning.patch import MIN_BATCH, approximate_memory_gb, minimal_patch
from autoseg.planning.spacing import total_resampled_voxels
from autoseg.planning.synthetic import synthetic_fingerprint
from autoseg.planning.topology import (
    MAX_ROUNDING_LOSS,
    MIN_FEATURE_MAP,
    fit_topology,
    pooling_topology,
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _stage_spacings(spacing, strides):
    current, out = list(spacing), []
    for stride in strides:
        current = [c * s for c, s in zip(current, stride)]
        out.append(list(current))
    return out


def _check_pooling_order(spacing, strides):
    """An axis is pooled only while its spacing is < 2x the finest; a thick axis (>= 2x the
    finest) is never pooled before the finest axes have been."""
    spacings = _stage_spacings(spacing, strides)
    for s in range(1, len(strides)):
        before = spacings[s - 1]
        finest = min(before)
        for a, st_ in enumerate(strides[s]):
            if st_ > 1:
                assert before[a] / finest < 2, (spacing, strides, s, a)
    finest_axes = [a for a, v in enumerate(spacing) if v == min(spacing)]
    for a, v in enumerate(spacing):
        if v / min(spacing) >= 2:
            first_thick = next((i for i, s in enumerate(strides) if s[a] > 1), None)
            first_fine = next(
                (i for i, s in enumerate(strides) if any(s[f] > 1 for f in finest_axes)), None
            )
            if first_thick is not None:
                assert first_fine is not None and first_fine < first_thick


spacing_3d = st.tuples(st.floats(0.3, 8.0), st.floats(0.2, 2.0), st.floats(0.2, 2.0)).map(
    lambda t: [round(v, 3) for v in t]
)
shape_3d = st.tuples(st.integers(1, 300), st.integers(16, 512), st.integers(16, 512))
spacing_2d = st.tuples(st.floats(0.05, 2.0), st.floats(0.05, 2.0)).map(
    lambda t: [round(v, 3) for v in t]
)
shape_2d = st.tuples(st.integers(6, 900), st.integers(6, 900))


@settings(max_examples=300, **SETTINGS)
@given(
    spacing=st.lists(st.floats(0.1, 10.0), min_size=2, max_size=3),
    patch=st.lists(st.integers(1, 600), min_size=3, max_size=3),
)
def test_topology_rules(spacing, patch):
    patch = patch[: len(spacing)]
    fitted, topo = fit_topology(spacing, patch)
    assert all(f <= p for f, p in zip(fitted, patch))
    assert all(f % d == 0 for f, d in zip(fitted, topo.divisor))
    assert all(f / d >= min(MIN_FEATURE_MAP, f) for f, d in zip(fitted, topo.divisor))
    # rounding costs at most 10 % of an axis, unless it is left unpooled anyway
    for f, p, n in zip(fitted, patch, topo.pools_per_axis):
        assert f >= (1 - MAX_ROUNDING_LOSS) * p or n == 0 or f == p
    _check_pooling_order(spacing, [list(s) for s in pooling_topology(spacing, fitted).strides])
    for kernel, spacings in zip(topo.kernel_sizes, _stage_spacings(spacing, topo.strides)):
        for k, v in zip(kernel, spacings):
            assert k == (3 if v / min(spacings) < 2 else 1)


def _fingerprint(dim, shape, spacing, fraction, extent_share, n_cases):
    extent = [max(v * s * extent_share, s) for v, s in zip(shape, spacing)]
    return synthetic_fingerprint(
        "950_Random",
        list(shape),
        spacing,
        n_cases=n_cases,
        foreground_fraction={"1": fraction},
        foreground_extent_mm={"1": extent},
        shape_spread=0.1,
        spacing_spread=0.05,
        seed=1,
    )


def _check_plan(fp, budget):
    plan = plan_dataset(fp, gpu_memory_gb=budget, device="cuda", estimator=approximate_memory_gb)
    assert plan_from_dict(plan.to_dict()) == plan
    for name, c in plan.configurations.items():
        arch = ArchitectureConfig.from_dict(c.architecture)
        divisor = arch.required_divisor()
        assert all(p % d == 0 for p, d in zip(c.patch_size, divisor)), name
        floor = minimal_patch(c.median_shape, c.spacing)
        assert all(p <= max(m, f) for p, m, f in zip(c.patch_size, c.median_shape, floor)), name
        assert c.batch_size >= MIN_BATCH
        memory = approximate_memory_gb(c.architecture, tuple(c.patch_size), c.batch_size)
        assert memory <= budget and c.estimated_memory_gb <= budget
        _check_pooling_order(c.spacing, c.architecture["strides"])
        if c.batch_size > MIN_BATCH:  # grown: one step sees at most 5 % of the dataset
            shapes = [case["shape_after_crop"] for case in fp["cases"]]
            spacings = [case["spacing"] for case in fp["cases"]]
            if c.crop is not None:
                dataset = fp["n_cases"] * math.prod(c.crop.window_voxels)
            else:
                at = c.spacing if c.dim == fp["dim"] else plan.target_spacing
                dataset = total_resampled_voxels(shapes, spacings, at)
            assert c.batch_size * math.prod(c.patch_size) <= 0.05 * dataset, name
    return plan


@settings(max_examples=50, **SETTINGS)
@given(
    shape=shape_3d,
    spacing=spacing_3d,
    fraction=st.floats(-5.0, -0.5).map(lambda e: 10**e),
    extent_share=st.floats(0.02, 1.0),
    budget=st.sampled_from([2.0, 4.0, 8.0, 16.0]),
)
def test_random_3d_plans(shape, spacing, fraction, extent_share, budget):
    fp = _fingerprint(3, shape, spacing, fraction, extent_share, 3)
    plan = _check_plan(fp, budget)
    assert "3d_fullres" in plan.configurations and "2d" in plan.configurations


@settings(max_examples=40, **SETTINGS)
@given(
    shape=shape_2d,
    spacing=spacing_2d,
    fraction=st.floats(1e-4, 0.3),
    extent_share=st.floats(0.02, 1.0),
    budget=st.sampled_from([1.0, 2.0, 8.0]),
)
def test_random_2d_plans(shape, spacing, fraction, extent_share, budget):
    fp = _fingerprint(2, shape, spacing, fraction, extent_share, 3)
    plan = _check_plan(fp, budget)
    assert list(plan.configurations) == ["2d"]
