"""Section 8: the cohort summary."""

from __future__ import annotations

from collections.abc import Mapping

from autoseg.evaluation.metrics import FAILURE_DICE
from autoseg.evaluation.report import assets
from autoseg.evaluation.report.cases import (
    CaseResult,
)
from autoseg.evaluation.report.constants import (
    _DASH,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    Source,
)
from autoseg.evaluation.report.markup import (
    esc,
    figure,
    missing,
    table,
)
from autoseg.evaluation.summary import describe


def _stat_text(stats: Mapping[str, float], digits: int) -> tuple[str, str]:
    if not stats["n"]:
        return _DASH, _DASH
    mean_sd = f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"
    med = f"{stats['median']:.{digits}f} [{stats['q1']:.{digits}f}–{stats['q3']:.{digits}f}]"
    return mean_sd, med


def section_cohorts(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    if not data.cohorts:
        return '<p class="note">dataset.json names no cohorts (cases.&lt;case&gt;.cohort).</p>'
    scored = [r for r in results if not r.error]
    if source is None or not scored:
        return missing("No scored out-of-fold predictions yet.")
    labels = sorted(data.labels)
    groups: dict[str, list[CaseResult]] = {"all": scored}
    for r in scored:
        c = data.cohorts.get(r.case)
        if c:
            groups.setdefault(c, []).append(r)
    rows = []
    for g, members in groups.items():
        for lab in labels:
            dice_mean, dice_med = _stat_text(describe(r.metrics[lab]["dice"] for r in members), 3)
            hd = describe(r.metrics[lab]["hd95_mm"] for r in members)
            hd_mean, hd_med = _stat_text(hd, 2)
            undefined = f" ({hd['n_undefined']} undefined)" if hd["n_undefined"] else ""
            fails = sum(r.metrics[lab]["dice"] < FAILURE_DICE for r in members)
            rows.append(
                f'<tr class="{"chosen" if g == "all" else ""}"><td>{esc(g)}</td>'
                f"<td>{esc(data.labels[lab])}</td>"
                f'<td class="n">{len(members)}</td><td class="n">{esc(dice_mean)}</td>'
                f'<td class="n">{esc(dice_med)}</td><td class="n">{esc(hd_mean)}</td>'
                f'<td class="n">{esc(hd_med + undefined)}</td>'
                f'<td class="n">{fails} / {len(members)}</td></tr>'
            )
    headers = [
        "cohort",
        "label",
        ("cases", True),
        ("Dice mean ± sd", True),
        ("Dice median [IQR]", True),
        ("HD95 mm mean ± sd", True),
        ("HD95 mm median [IQR]", True),
        ("failures", True),
    ]
    primary = data.primary_label
    by_group = {g: [r.metrics[primary]["dice"] for r in members] for g, members in groups.items()}
    pname = data.labels.get(primary, str(primary))
    return (
        "<p>Out-of-fold metrics of the per-case table, grouped by the cohort in dataset.json. "
        "sd with ddof = 1; IQR = 25th–75th percentile; HD95 undefined (one mask empty) is "
        "left out and counted.</p>"
        + table(headers, rows, table_id="cohort-table")
        + figure(
            assets.plot_dice_by_group(by_group, pname),
            "Dice by cohort",
            f"{pname} Dice per case by cohort; bar: median; dashed: failure threshold "
            f"{FAILURE_DICE}.",
        )
    )
