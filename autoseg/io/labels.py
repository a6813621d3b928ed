"""Label maps: the one rule for what counts as a segmentation, shared by every stage.

A label map is a single-channel array of non-negative integers (0 = background). Tools often
save masks as float; whole-number floats are accepted and converted, anything else (a
probability map, NaN) is refused with a message naming the file.
"""

from __future__ import annotations

import os

import numpy as np

from autoseg.errors import AutosegError
from autoseg.io.image import Geometry, read_image


def as_label_map(array: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Integer, non-negative label map; bool becomes uint8, whole-number floats int32."""
    if array.dtype == bool:
        return array.view(np.uint8)
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):  # also false for NaN
            raise AutosegError(
                "label map holds non-integer values (a probability map?)",
                path=path,
                fix="threshold it, or save labels as integers (0 = background, 1, 2, ...)",
            )
        array = rounded.astype(np.int32)
    elif array.dtype.kind not in "iu":
        raise AutosegError(f"label map has unsupported type {array.dtype}", path=path)
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise AutosegError(
            "label map holds negative values",
            path=path,
            fix="use 0 for background and positive integers for classes",
        )
    return array


def read_label_map(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a label map file (any format :func:`read_image` reads) and check it."""
    data = read_image(path)
    if data.array.ndim != data.geometry.ndim:
        raise AutosegError(
            "segmentation has several components per pixel (colour?)",
            path=path,
            fix="save the mask as a single-channel label map (0 = background, 1, 2, ...)",
        )
    return as_label_map(data.array, path), data.geometry
