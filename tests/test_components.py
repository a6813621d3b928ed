"""label_components against scipy.ndimage.label: the same components (up to the order of the
labels) and the same count, for every dtype, memory layout and connectivity autoseg uses.

cc3d 4.1.1 called directly (autoseg.io.components has the details) fails this test: 4 to 10
of the 100 bool 2D masks per layout labelled wrongly with 8-connectivity, ValueError on the
read-only ones, IndexError on a reversed one-row mask, and class maps split by value.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from autoseg.io.components import CONNECTIVITIES, full_connectivity, label_components

RANK = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}  # connectivity -> generate_binary_structure rank


def _bool(rng, shape):
    return rng.random(shape) < rng.uniform(0.1, 0.9)


def _uint8(rng, shape):
    return _bool(rng, shape).astype(np.uint8)


def _int_classes(rng, shape):  # several labels: every nonzero value is foreground
    return np.where(_bool(rng, shape), rng.integers(1, 4, shape), 0).astype(np.int64)


def _uint16_256(rng, shape):  # 256 would wrap to 0 in a plain cast to uint8
    return _bool(rng, shape).astype(np.uint16) * 256


MAKERS = {"bool": _bool, "uint8": _uint8, "int64": _int_classes, "uint16": _uint16_256}


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


VIEWS = {
    "contiguous": lambda a: a,
    "transposed": lambda a: a.T,
    "step2_axis0": lambda a: a[::2],
    "step2_last": lambda a: a[..., ::2],
    "reversed": lambda a: a[::-1, ..., ::-1],
    "read_only": _read_only,
}

CASES = {2: 100, 3: 20}  # per connectivity, dtype and view: 4,800 2D and 1,440 3D masks
MAX_SIDE = {2: 30, 3: 10}


def _same_partition(labels: np.ndarray, n: int, reference: np.ndarray, m: int) -> bool:
    """Same foreground, labels exactly 1..n, and a one-to-one map between the two labellings."""
    fg = reference > 0
    if not np.array_equal(labels > 0, fg):
        return False
    if not fg.any():
        return n == m == 0
    if np.unique(labels[fg]).tolist() != list(range(1, n + 1)):
        return False
    pairs = np.unique(labels[fg].astype(np.int64) * (m + 1) + reference[fg])
    return n == m == pairs.size


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("dtype", MAKERS)
@pytest.mark.parametrize(
    "ndim,connectivity", [(nd, c) for nd, conns in CONNECTIVITIES.items() for c in conns]
)
def test_label_components_matches_scipy(ndim, connectivity, dtype, view):
    seed = [*RANK].index(connectivity) * 100 + [*MAKERS].index(dtype) * 10 + [*VIEWS].index(view)
    rng = np.random.default_rng(seed)
    structure = ndimage.generate_binary_structure(ndim, RANK[connectivity])
    wrong = []
    for i in range(CASES[ndim]):
        base = MAKERS[dtype](rng, tuple(rng.integers(1, MAX_SIDE[ndim] + 1, ndim)))
        mask = VIEWS[view](base)
        before = mask.copy()
        labels, n = label_components(mask, connectivity)
        reference, m = ndimage.label(mask, structure)
        assert labels.shape == mask.shape and isinstance(n, int)
        assert np.array_equal(mask, before)  # input untouched
        if not _same_partition(labels, n, reference, m):
            wrong.append((i, mask.shape, n, m))
    assert not wrong, f"{len(wrong)} of {CASES[ndim]} masks labelled wrongly: {wrong[:5]}"


def test_default_connectivity_is_full():
    diagonal = np.eye(3, dtype=bool)
    assert label_components(diagonal)[1] == 1  # 8-connected
    assert label_components(diagonal, 4)[1] == 3
    corner = np.zeros((2, 2, 2), bool)
    corner[0, 0, 0] = corner[1, 1, 1] = True
    assert label_components(corner)[1] == 1  # 26-connected
    assert label_components(corner, 18)[1] == 2
    assert full_connectivity(2) == 8 and full_connectivity(3) == 26


def test_empty_and_all_background():
    assert label_components(np.zeros((0, 4), bool))[1] == 0
    labels, n = label_components(np.zeros((3, 4, 5), np.uint8))
    assert n == 0 and not labels.any()


@pytest.mark.parametrize(
    "shape,connectivity", [((4, 4), 6), ((4, 4), 26), ((2, 2, 2), 8), ((4,), None), ((2,) * 4, 8)]
)
def test_connectivity_must_fit_the_dimension(shape, connectivity):
    with pytest.raises(ValueError):
        label_components(np.ones(shape, bool), connectivity)
