"""Evaluation: segmentation metrics, nerve measurements and rater agreement.

Pure functions on arrays (fast enough for end-of-fold validation) plus folder-level drivers
behind ``autoseg evaluate``, ``autoseg measure`` and ``autoseg raters``. Definitions and
rules for empty masks are in documentation/evaluation.md and documentation/measurements.md.
"""

from autoseg.evaluation.measure import (
    NerveMeasurement,
    SliceMeasurement,
    measure_files,
    measure_nerve,
    plot_csa,
)
from autoseg.evaluation.metrics import (
    DETECTION_IOU,
    FAILURE_DICE,
    METRIC_KEYS,
    EvaluationResult,
    binary_metrics,
    compute_metrics,
    dice,
    evaluate_folders,
)
from autoseg.evaluation.raters import (
    RaterResult,
    compare_raters,
    consensus,
    human_level_test,
    majority_vote,
    staple,
)
from autoseg.evaluation.summary import describe, load_cohorts, summarize
from autoseg.evaluation.surface import hausdorff_distance, surface_distances, surface_voxels

__all__ = [
    "DETECTION_IOU",
    "FAILURE_DICE",
    "METRIC_KEYS",
    "EvaluationResult",
    "NerveMeasurement",
    "RaterResult",
    "SliceMeasurement",
    "binary_metrics",
    "compare_raters",
    "compute_metrics",
    "consensus",
    "describe",
    "dice",
    "evaluate_folders",
    "hausdorff_distance",
    "human_level_test",
    "load_cohorts",
    "majority_vote",
    "measure_files",
    "measure_nerve",
    "plot_csa",
    "staple",
    "summarize",
    "surface_distances",
    "surface_voxels",
]
