from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from autoseg.errors import AutosegError
from autoseg.postprocessing.rules import (
    MIN_SIZE_FRACTION,
    apply_postprocessing,
    apply_rule,
    component_sizes,
    connectivity_for,
    keep_k_largest,
    keep_largest_component,
    min_size_from_training,
    min_size_rule,
    min_voxels_for,
    remove_small_components,
)


def _scene() -> np.ndarray:
    """3D label map: label 1 in three pieces (27, 8 and 1 voxels), label 2 one block."""
    seg = np.zeros((8, 12, 12), np.uint8)
    seg[1:4, 1:4, 1:4] = 1  # 27
    seg[5:7, 8:10, 8:10] = 1  # 8
    seg[7, 0, 11] = 1  # 1
    seg[0:2, 8:12, 0:3] = 2  # 24
    return seg


def test_connectivity_is_full():
    assert connectivity_for(3) == 26
    assert connectivity_for(2) == 8
    with pytest.raises(ValueError):
        connectivity_for(4)
    # Two voxels touching only at a corner are one component (26-connectivity) ...
    diag = np.zeros((3, 3, 3), np.uint8)
    diag[0, 0, 0] = diag[1, 1, 1] = 1
    assert list(component_sizes(diag, 1)) == [2]
    # ... and in 2D (8-connectivity).
    d2 = np.eye(4, dtype=np.uint8)
    assert list(component_sizes(d2, 1)) == [4]


def test_component_sizes_sorted_and_per_label():
    seg = _scene()
    assert list(component_sizes(seg, 1)) == [27, 8, 1]
    assert list(component_sizes(seg, 2)) == [24]
    assert component_sizes(seg, 3).size == 0


def test_keep_largest_removes_islands_only_of_its_label():
    seg = _scene()
    before = seg.copy()
    out = keep_largest_component(seg, 1)
    assert np.array_equal(seg, before)  # input untouched
    assert list(component_sizes(out, 1)) == [27]
    assert np.array_equal(out == 2, seg == 2)
    # removed voxels became background
    assert np.all(out[(seg == 1) & (out != 1)] == 0)
    assert int((out == 1).sum()) == 27


def test_keep_k_largest():
    seg = _scene()
    out = keep_k_largest(seg, 1, 2)
    assert list(component_sizes(out, 1)) == [27, 8]
    assert out[7, 0, 11] == 0
    same = keep_k_largest(seg, 1, 5)
    assert np.array_equal(same, seg)
    with pytest.raises(ValueError):
        keep_k_largest(seg, 1, 0)


def test_k_largest_ties_are_deterministic():
    seg = np.zeros((1, 5, 9), np.uint8)
    seg[0, 0, 0] = seg[0, 0, 4] = seg[0, 0, 8] = 1  # three equal single voxels
    out = keep_k_largest(seg[0], 1, 2)
    # equal sizes keep those met first in array order
    assert out[0, 0] == 1 and out[0, 4] == 1 and out[0, 8] == 0


def test_remove_small_components():
    seg = _scene()
    out = remove_small_components(seg, 1, 8)
    assert list(component_sizes(out, 1)) == [27, 8]
    out = remove_small_components(seg, 1, 9)
    assert list(component_sizes(out, 1)) == [27]
    assert np.array_equal(remove_small_components(seg, 1, 1), seg)


def test_two_dimensional_label_map():
    seg = np.zeros((20, 20), np.uint8)
    seg[2:8, 2:8] = 1
    seg[15, 15] = 1
    seg[10:12, 0:3] = 2
    out = keep_largest_component(seg, 1)
    assert out[15, 15] == 0 and out[3, 3] == 1
    assert np.array_equal(out == 2, seg == 2)


def test_empty_label_is_a_no_op():
    seg = np.zeros((4, 4, 4), np.uint8)
    for fn in (
        lambda s: keep_largest_component(s, 1),
        lambda s: keep_k_largest(s, 1, 2),
        lambda s: remove_small_components(s, 1, 5),
    ):
        assert np.array_equal(fn(seg), seg)


def test_min_size_from_training():
    assert min_size_from_training([100.0, 40.0, 900.0]) == pytest.approx(MIN_SIZE_FRACTION * 40)
    assert min_size_from_training([50.0], fraction=0.5) == pytest.approx(25.0)
    assert min_size_from_training([]) is None
    assert min_size_from_training([0.0]) is None


def test_min_voxels_for_volume_and_spacing():
    # voxel of 0.5 * 0.5 * 4 = 1 mm³: a component of n voxels is removed when n < 12.5 -> 13
    assert min_voxels_for(12.5, (4.0, 0.5, 0.5)) == 13
    assert min_voxels_for(12.0, (4.0, 0.5, 0.5)) == 12  # exactly 12 mm³ is kept
    assert min_voxels_for(0.01, (1.0, 1.0)) == 1
    rule = min_size_rule(12.5, (4.0, 0.5, 0.5))
    assert rule == {"rule": "min_size", "min_voxels": 13, "min_volume_mm3": 12.5}


def test_apply_postprocessing_json_decisions():
    seg = _scene()
    decisions = json.loads(
        json.dumps(
            {
                "1": {"rule": "k_largest", "k": 2},
                "2": {"rule": "none"},
            }
        )
    )
    out = apply_postprocessing(seg, decisions)
    assert list(component_sizes(out, 1)) == [27, 8]
    assert np.array_equal(out == 2, seg == 2)
    out = apply_postprocessing(seg, {1: {"rule": "largest"}})
    assert list(component_sizes(out, 1)) == [27]
    out = apply_postprocessing(seg, {"1": {"rule": "min_size", "min_voxels": 5}})
    assert list(component_sizes(out, 1)) == [27, 8]
    assert np.array_equal(apply_postprocessing(seg, {}), seg)


def test_min_size_uses_volume_when_spacing_is_given():
    seg = _scene()
    rule = {"rule": "min_size", "min_voxels": 2, "min_volume_mm3": 16.0}
    # without spacing: voxels (removes the 1-voxel piece only)
    assert list(component_sizes(apply_rule(seg, 1, rule), 1)) == [27, 8]
    # with 1 x 1 x 1 mm voxels 16 mm³ = 16 voxels: the 8-voxel piece goes too
    assert list(component_sizes(apply_rule(seg, 1, rule, (1.0, 1.0, 1.0)), 1)) == [27]
    # with 3 mm³ voxels the 8-voxel piece is 24 mm³ and stays
    assert list(component_sizes(apply_rule(seg, 1, rule, (3.0, 1.0, 1.0)), 1)) == [27, 8]


@pytest.mark.parametrize(
    "decisions",
    [
        {"1": {"rule": "erode"}},
        {"1": {"rule": "k_largest"}},
        {"1": {"rule": "k_largest", "k": 0}},
        {"1": {"rule": "min_size"}},
        {"1": "largest"},
        {"x": {"rule": "largest"}},
        {"0": {"rule": "largest"}},
    ],
)
def test_bad_decisions_are_user_errors(decisions):
    with pytest.raises(AutosegError):
        apply_postprocessing(_scene(), decisions)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, st.tuples(*(st.integers(1, 6),) * 3), elements=st.integers(0, 2)),
    st.integers(1, 3),
    st.integers(1, 6),
)
def test_rules_only_remove_voxels_of_their_label(seg, k, min_voxels):
    for out in (
        keep_largest_component(seg, 1),
        keep_k_largest(seg, 1, k),
        remove_small_components(seg, 1, min_voxels),
    ):
        changed = out != seg
        assert np.all(seg[changed] == 1) and np.all(out[changed] == 0)
        kept = component_sizes(out, 1)
        all_sizes = component_sizes(seg, 1)
        assert kept.sum() <= all_sizes.sum()
    # k largest keeps exactly min(k, n) components, the largest ones
    kept = component_sizes(keep_k_largest(seg, 1, k), 1)
    assert list(kept) == list(component_sizes(seg, 1)[:k])
    small = component_sizes(remove_small_components(seg, 1, min_voxels), 1)
    assert list(small) == [s for s in component_sizes(seg, 1) if s >= min_voxels]
