"""Planning: pure rules from the dataset fingerprint (and a GPU memory budget) to ``plans.json``.

``autoseg plan DATASET`` = :func:`run_plan`; :func:`plan_dataset` is the pure function behind
it and :func:`load_plan` reads (and validates) the result. Every rule, with the numbers
behind it, is described in ``documentation/planning.md``.
"""

from autoseg.planning.plan import (
    CONFIG_NAMES,
    PLANS_FILE,
    ConfigurationPlan,
    CropWindow,
    DeviceInfo,
    FingerprintSummary,
    Loss,
    Normalization,
    Plan,
    Resampling,
    Schedule,
    load_plan,
    plan_from_dict,
    save_plan,
)
from autoseg.planning.planner import (
    as_fingerprint,
    detect_device,
    ensure_fingerprint,
    fingerprint_sha256,
    plan_dataset,
    plan_is_stale,
    run_plan,
)
from autoseg.planning.report import format_plan
from autoseg.planning.schedule import parse_duration

__all__ = [
    "CONFIG_NAMES",
    "PLANS_FILE",
    "ConfigurationPlan",
    "CropWindow",
    "DeviceInfo",
    "FingerprintSummary",
    "Loss",
    "Normalization",
    "Plan",
    "Resampling",
    "Schedule",
    "as_fingerprint",
    "detect_device",
    "ensure_fingerprint",
    "fingerprint_sha256",
    "format_plan",
    "load_plan",
    "parse_duration",
    "plan_dataset",
    "plan_from_dict",
    "plan_is_stale",
    "run_plan",
    "save_plan",
]
