"""Reading and writing images, and the standard dataset layout.

Array convention used everywhere in autoseg: numpy arrays in SimpleITK's order, i.e. axes
reversed from ITK's (x, y, z): a 3D image is ``(z, y, x)`` and a 2D image ``(y, x)``.
Spacings handed between stages are in the same (array) order; :class:`Geometry` keeps ITK's
order because that is what files store.
"""

from autoseg.io.atomic import atomic_path, write_json_atomic
from autoseg.io.dataset import Case, DatasetJson, list_cases, list_test_cases, load_dataset_json
from autoseg.io.image import (
    IMAGE_EXTENSIONS,
    Geometry,
    ImageData,
    collapse_grey_rgb,
    read_image,
    split_extension,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "Case",
    "DatasetJson",
    "Geometry",
    "ImageData",
    "atomic_path",
    "collapse_grey_rgb",
    "list_cases",
    "list_test_cases",
    "load_dataset_json",
    "read_image",
    "split_extension",
    "write_image",
    "write_json_atomic",
]
