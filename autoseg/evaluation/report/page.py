"""The page: every section rendered (a failing section says so instead of failing the report), and
:func:`build_report`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from autoseg import __version__
from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import map_cases
from autoseg.evaluation.report import assets
from autoseg.evaluation.report.cases import (
    CaseResult,
    case_jobs,
    score_case,
)
from autoseg.evaluation.report.cohorts import (
    section_cohorts,
)
from autoseg.evaluation.report.constants import (
    _SECTION_ERRORS,
    MAX_WORST,
    REPORT_FILE,
    SECTIONS,
)
from autoseg.evaluation.report.cross_validation import (
    section_cross_validation,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    choose_source,
    gather,
)
from autoseg.evaluation.report.learning_curve_section import section_learning_curve
from autoseg.evaluation.report.markup import (
    esc,
)
from autoseg.evaluation.report.measurements import (
    section_measurements,
)
from autoseg.evaluation.report.overview import (
    section_overview,
    section_plan,
)
from autoseg.evaluation.report.per_case import (
    section_cases,
    section_worst,
)
from autoseg.evaluation.report.robustness_section import section_robustness
from autoseg.evaluation.report.suggestions import section_suggestions
from autoseg.evaluation.report.training_section import (
    section_training,
)
from autoseg.io import atomic_path


def _guarded(render: Callable[[], str]) -> str:
    """A section that cannot be built says why instead of taking the whole report down."""
    try:
        return render()
    except _SECTION_ERRORS as exc:
        return f'<p class="error">This section could not be built: {esc(exc)}</p>'


def render_page(data: ReportData, bodies: Mapping[str, str]) -> str:
    title = f"autoseg report: {data.raw.name}"
    toc = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{esc(name)}</h2>{bodies.get(sid, "")}</section>'
        for sid, name in SECTIONS
    )
    subtitle = data.ds.name or data.raw.name
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="autoseg {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{assets.CSS}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1>'
        f'<p class="sub">{esc(subtitle)} · {len(data.cases)} cases · labels '
        f"{esc(', '.join(data.labels.values()))}</p>"
        f'<nav class="toc">{toc}</nav></header>'
        f"{sections}"
        '<p class="note">Written by autoseg report; every number comes from the files under '
        f"<code>{esc(data.res)}</code> and <code>{esc(data.raw)}</code> "
        "(documentation/report.md).</p>"
        f"<script>{assets.SORT_JS}</script></body></html>\n"
    )


def build_report(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    max_worst: int = MAX_WORST,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``results/<ds>/report.html`` (or ``out``) atomically and return its path.

    ``max_worst`` lowest-Dice cases get overlay figures; ``num_workers`` processes score the
    cases (default min(4, CPUs); 0 = in this process).
    """
    if max_worst < 0:
        raise AutosegError(f"max_worst {max_worst} must be 0 or more", fix="use e.g. 5")
    data = gather(dataset, root)
    source = choose_source(data)
    jobs = case_jobs(data, source) if source is not None else []
    results: list[CaseResult] = (
        map_cases(score_case, jobs, num_workers=num_workers, progress=progress, desc="report")
        if jobs
        else []
    )
    by_case = {j.case: j for j in jobs}
    bodies = {
        "overview": _guarded(lambda: section_overview(data, source, results)),
        "plan": _guarded(lambda: section_plan(data)),
        "training": _guarded(lambda: section_training(data)),
        "cross-validation": _guarded(lambda: section_cross_validation(data)),
        "cases": _guarded(lambda: section_cases(data, source, results)),
        "worst-cases": _guarded(lambda: section_worst(data, source, results, by_case, max_worst)),
        "measurements": _guarded(lambda: section_measurements(data, source, results)),
        "cohorts": _guarded(lambda: section_cohorts(data, source, results)),
        "learning-curve": _guarded(lambda: section_learning_curve(data)),
        "robustness": _guarded(lambda: section_robustness(data)),
        "suggestions": _guarded(lambda: section_suggestions(data.res)),
    }
    page = render_page(data, bodies)
    path = Path(out) if out is not None else data.res / REPORT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
