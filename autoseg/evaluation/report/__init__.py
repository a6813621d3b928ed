"""``autoseg report DATASET``: one self-contained HTML page about a trained dataset.

``<root>/results/<ds>/report.html`` holds, in order: the dataset and how to reproduce it, the
plan in plain words, the training curves of every fold, the cross-validation table with the
chosen model, per-case metrics of the chosen model's out-of-fold predictions (sortable), the
worst cases as overlay figures, nerve measurements of prediction vs reference, and a cohort
summary. Images are embedded as base64 PNG; the page needs no network and no JavaScript
library (a dozen lines of plain JavaScript sort the tables). documentation/report.md says
where every number comes from.

Everything is read from the files training, find-best and planning wrote (this module imports
neither :mod:`autoseg.training` nor :mod:`autoseg.inference`). Whatever is not there yet (a
fold still training, no ``inference.json``, a deleted curve) makes its section say so; the
report never fails because a stage has not run.
"""

from autoseg.evaluation.report.cases import CaseResult, case_jobs, score_case
from autoseg.evaluation.report.constants import MAX_WORST, REPORT_FILE, SECTIONS
from autoseg.evaluation.report.gather import ReportData, Source, choose_source, gather
from autoseg.evaluation.report.page import build_report, render_page
from autoseg.evaluation.report.per_case import overlay_panels

__all__ = [
    "MAX_WORST",
    "REPORT_FILE",
    "SECTIONS",
    "CaseResult",
    "ReportData",
    "Source",
    "build_report",
    "case_jobs",
    "choose_source",
    "gather",
    "overlay_panels",
    "render_page",
    "score_case",
]
