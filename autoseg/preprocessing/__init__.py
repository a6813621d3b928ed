"""Preprocessing: crop to the non-zero region, normalize, resample — and the exact inverse.

See ``documentation/preprocessing.md`` for the steps, the on-disk format and the resume rules.
"""

from autoseg.preprocessing.cropping import bounding_box, crop, crop_to_nonzero, paste
from autoseg.preprocessing.invert import (
    invert_labels,
    invert_prediction,
    invert_probabilities,
    original_geometry,
)
from autoseg.preprocessing.normalization import ChannelNormalization, normalize_image
from autoseg.preprocessing.preprocess import (
    PreprocessedCase,
    PreprocessingParams,
    data_identifier,
    load_properties,
    params_from_plan,
    preprocess_case,
    preprocess_dataset,
    read_case,
    sample_class_locations,
    write_case,
)
from autoseg.preprocessing.resampling import (
    compute_new_shape,
    resample_image,
    resample_labels,
    resample_probabilities,
)

__all__ = [
    "ChannelNormalization",
    "PreprocessedCase",
    "PreprocessingParams",
    "bounding_box",
    "compute_new_shape",
    "data_identifier",
    "crop",
    "crop_to_nonzero",
    "invert_labels",
    "invert_prediction",
    "invert_probabilities",
    "load_properties",
    "normalize_image",
    "original_geometry",
    "params_from_plan",
    "paste",
    "preprocess_case",
    "preprocess_dataset",
    "read_case",
    "resample_image",
    "resample_labels",
    "resample_probabilities",
    "sample_class_locations",
    "write_case",
]
