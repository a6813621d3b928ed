"""Section 7: nerve measurements of prediction against reference."""

from __future__ import annotations

import math

import numpy as np

from autoseg.evaluation.report import assets
from autoseg.evaluation.report.cases import (
    CaseResult,
)
from autoseg.evaluation.report.constants import (
    CSA_PLOT_CASES,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    Source,
)
from autoseg.evaluation.report.markup import (
    esc,
    figure,
    is_missing,
    missing,
    table,
    td_num,
    td_size,
)
from autoseg.evaluation.report.per_case import (
    _label_unit,
)


def _rel_diff(pred: float, ref: float) -> float:
    return 100.0 * (pred - ref) / ref if ref and not is_missing(ref) else math.nan


def csa_profile(r: CaseResult, label: int) -> assets.CsaProfile | None:
    m = r.measures.get(label)
    if not m or not m["ref"]["profile"]:
        return None
    ref_p, pred_p = m["ref"]["profile"], m["pred"]["profile"]
    keys = [*ref_p, *pred_p]
    span = range(min(keys), max(keys) + 1)  # absent slices count as 0 so gaps show
    mm = [k * m["slice_mm"] for k in span]
    return assets.CsaProfile(
        r.case,
        float(r.metrics[label]["dice"]),
        mm,
        [ref_p.get(k, 0.0) for k in span],
        mm,
        [pred_p.get(k, 0.0) for k in span],
    )


def section_measurements(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    if source is None:
        return missing("No out-of-fold predictions to measure yet.")
    scored = [r for r in results if not r.error and r.measures]
    if not scored:
        return missing("No case could be measured.")
    labels = sorted(data.labels)
    ndim = len(scored[0].spacing)
    unit, word = _label_unit(ndim)
    headers: list[str | tuple[str, bool]] = ["case"]
    if data.cohorts:
        headers.append("cohort")
    headers += ["label", (f"ref. {word} ({unit})", True), ("pred.", True), ("Δ %", True)]
    headers += [("ref. mean CSA (mm²)", True), ("pred.", True), ("Δ %", True)]
    if ndim == 3:
        headers += [("ref. length (mm)", True), ("pred.", True), ("branches ref. / pred.", True)]
    rows = []
    for r in sorted(scored, key=lambda r: r.case):
        for lab in labels:
            m = r.measures[lab]
            ref, pred = m["ref"], m["pred"]
            vol_ref = ref["volume_mm3"] if ndim == 3 else ref["csa_mean_mm2"]
            vol_pred = pred["volume_mm3"] if ndim == 3 else pred["csa_mean_mm2"]
            cells = [f"<td>{esc(r.case)}</td>"]
            if data.cohorts:
                cells.append(f"<td>{esc(data.cohorts.get(r.case, ''))}</td>")
            cells += [
                f"<td>{esc(data.labels[lab])}</td>",
                td_size(vol_ref),
                td_size(vol_pred),
                td_num(_rel_diff(vol_pred, vol_ref), 1),
                td_size(ref["csa_mean_mm2"]),
                td_size(pred["csa_mean_mm2"]),
                td_num(_rel_diff(pred["csa_mean_mm2"], ref["csa_mean_mm2"]), 1),
            ]
            if ndim == 3:
                cells += [
                    td_num(ref["length_mm"], 1),
                    td_num(pred["length_mm"], 1),
                    f'<td class="n">{ref["n_branches"]} / {pred["n_branches"]}</td>',
                ]
            rows.append(f"<tr>{''.join(cells)}</tr>")
    primary = data.primary_label
    pname = data.labels.get(primary, str(primary))
    ref_csa = [r.measures[primary]["ref"]["csa_mean_mm2"] for r in scored]
    pred_csa = [r.measures[primary]["pred"]["csa_mean_mm2"] for r in scored]
    diffs = np.array([p - q for p, q in zip(pred_csa, ref_csa)], dtype=float)
    diffs = diffs[np.isfinite(diffs)]
    agreement = (
        f"{pname} mean CSA, prediction − reference: {np.mean(diffs):+.2f} ± "
        f"{np.std(diffs, ddof=1) if diffs.size > 1 else 0.0:.2f} mm² (mean ± sd over "
        f"{diffs.size} cases with the nerve in both)."
        if diffs.size
        else ""
    )
    quantities = [("mean CSA (mm²)", ref_csa, pred_csa)]
    if ndim == 3:
        quantities.append(
            (
                "volume (mm³)",
                [r.measures[primary]["ref"]["volume_mm3"] for r in scored],
                [r.measures[primary]["pred"]["volume_mm3"] for r in scored],
            )
        )
    figs = [
        figure(
            assets.plot_agreement(quantities, pname),
            "measurement agreement",
            "One dot per case; dotted: identity.",
        )
    ]
    if ndim == 3:
        ranked = sorted(
            (r for r in scored if r.measures[primary]["ref"]["profile"]),
            key=lambda r: (r.metrics[primary]["dice"], r.case),
        )
        picks = []
        if ranked:
            for i in (0, len(ranked) // 2, len(ranked) - 1):
                if ranked[i] not in picks:
                    picks.append(ranked[i])
        profiles = [p for r in picks[:CSA_PLOT_CASES] if (p := csa_profile(r, primary))]
        if profiles:
            figs.append(
                figure(
                    assets.plot_csa_profiles(profiles, pname),
                    "CSA along the nerve",
                    "Total perpendicular CSA per slice along the nerve for the worst, median "
                    "and best case by Dice; reference green, prediction red.",
                )
            )
    return (
        "<p>Computed here with autoseg.evaluation.measure_nerve on the reference and on the "
        "out-of-fold prediction, both sliced along the reference nerve's longest axis. Mean "
        "CSA: mean over slices of the total perpendicular cross-sectional area in the slice "
        "(in 2D: the label's area). Same method as autoseg measure "
        "(documentation/measurements.md).</p>"
        + (f"<p><b>{esc(agreement)}</b></p>" if agreement else "")
        + "".join(figs)
        + table(headers, rows, sortable=True, table_id="measure-table")
    )
