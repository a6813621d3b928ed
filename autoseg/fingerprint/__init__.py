"""Dataset fingerprint: the statistics every planning rule is derived from.

``autoseg fingerprint DATASET`` reads each training case once and writes
``<root>/preprocessed/<dataset>/fingerprint.json`` (schema in ``documentation/fingerprint.md``).
"""

from autoseg.fingerprint.extract import (
    MAX_SAMPLES_PER_CASE,
    aggregate,
    analyse_case,
    bounding_box,
    case_statistics,
    default_workers,
    extract_fingerprint,
    fingerprint_is_fresh,
    fingerprint_path,
    run_fingerprint,
)
from autoseg.fingerprint.modality import MODALITIES, channel_modalities, modality_of
from autoseg.fingerprint.schema import (
    FINGERPRINT_FILE,
    SCHEMA_VERSION,
    Aggregate,
    CaseFingerprint,
    ComponentStats,
    ExtentStats,
    Fingerprint,
    IntensityStats,
    PooledIntensityStats,
    load_fingerprint,
)
from autoseg.fingerprint.summary import format_summary

__all__ = [
    "FINGERPRINT_FILE",
    "MAX_SAMPLES_PER_CASE",
    "MODALITIES",
    "SCHEMA_VERSION",
    "Aggregate",
    "CaseFingerprint",
    "ComponentStats",
    "ExtentStats",
    "Fingerprint",
    "IntensityStats",
    "PooledIntensityStats",
    "aggregate",
    "analyse_case",
    "bounding_box",
    "case_statistics",
    "channel_modalities",
    "default_workers",
    "extract_fingerprint",
    "fingerprint_is_fresh",
    "fingerprint_path",
    "format_summary",
    "load_fingerprint",
    "modality_of",
    "run_fingerprint",
]
