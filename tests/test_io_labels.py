from __future__ import annotations

import numpy as np
import pytest

from autoseg.errors import AutosegError
from autoseg.io import Geometry, write_image
from autoseg.io.labels import as_label_map, read_label_map


def test_whole_number_floats_and_bools_become_integers():
    out = as_label_map(np.array([[0.0, 1.0], [2.0, 0.0]], np.float32))
    assert out.dtype == np.int32 and out.tolist() == [[0, 1], [2, 0]]
    assert as_label_map(np.array([True, False])).dtype == np.uint8


@pytest.mark.parametrize(
    "array, match",
    [
        (np.array([0.0, 0.4]), "non-integer"),
        (np.array([0.0, np.nan]), "non-integer"),
        (np.array([0, -1], np.int16), "negative"),
        (np.array([1 + 0j]), "unsupported"),
    ],
)
def test_refused_label_maps(array, match):
    with pytest.raises(AutosegError, match=match):
        as_label_map(array, "mask.nii.gz")


def test_read_label_map_refuses_colour(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    path = write_image(tmp_path / "m.png", rgb, Geometry.default((4, 5)))
    with pytest.raises(AutosegError, match="components"):
        read_label_map(path)
