"""Post-processing: connected-component rules on label maps (its own stage).

Below inference (which applies the chosen rule to a prediction) and evaluation (find-best
chooses the rule on out-of-fold predictions, the report shows its effect), so that neither
imports the other for it. The rules: :mod:`autoseg.postprocessing.rules`.
"""

from autoseg.postprocessing.rules import (
    apply_postprocessing,
    apply_rule,
    component_sizes,
    keep_k_largest,
    keep_largest_component,
    min_size_from_training,
    min_size_rule,
    remove_small_components,
    validate_rule,
)

__all__ = [
    "apply_postprocessing",
    "apply_rule",
    "component_sizes",
    "keep_k_largest",
    "keep_largest_component",
    "min_size_from_training",
    "min_size_rule",
    "remove_small_components",
    "validate_rule",
]
