"""Names and limits the report's modules share."""

from __future__ import annotations

from autoseg.errors import AutosegError

REPORT_FILE = "report.html"
INFERENCE_FILE = "inference.json"
SPLITS_FILE = "splits.json"
MAX_WORST = 5
CSA_PLOT_CASES = 3
"""Cases in the CSA-along-the-nerve figure: the worst, the median and the best by Dice, which
shows the range of agreement without a wall of plots."""

SECTIONS = (
    ("overview", "1. Dataset"),
    ("plan", "2. Plan"),
    ("training", "3. Training"),
    ("cross-validation", "4. Cross-validation"),
    ("cases", "5. Per-case metrics"),
    ("worst-cases", "6. Worst cases"),
    ("measurements", "7. Measurements"),
    ("cohorts", "8. Cohorts"),
    ("learning-curve", "9. Learning curve"),
    ("suggestions", "10. Scans to label next"),
    ("robustness", "11. Robustness"),
)
_SECTION_ERRORS = (AutosegError, OSError, ValueError, KeyError, TypeError, IndexError)
_DASH = "–"
