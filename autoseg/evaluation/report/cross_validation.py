"""Section 4: the cross-validation table, the chosen model and its post-processing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from autoseg.evaluation.report.constants import (
    _DASH,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    fold_mean_dice,
    mean_metric,
)
from autoseg.evaluation.report.markup import (
    esc,
    fmt,
    missing,
    table,
    td_num,
)


def _rule_text(rule: Mapping[str, Any]) -> str:
    name = rule.get("rule", "none")
    if name == "largest":
        return "keep the largest component"
    if name == "k_largest":
        return f"keep the {rule.get('k')} largest components"
    if name == "min_size":
        return f"remove components < {float(rule.get('min_volume_mm3') or 0):.4g} mm³"
    return "none"


def section_cross_validation(data: ReportData) -> str:
    labels = sorted(data.labels)
    names = data.labels
    multi = len(labels) > 1
    if data.inference is not None:
        info = data.inference
        headers: list[str | tuple[str, bool]] = ["", "candidate", ("mean Dice", True)]
        if multi:
            headers += [(f"Dice {names[lab]}", True) for lab in labels]
        headers += [("mean HD95 (mm)", True)]
        if multi:
            headers += [(f"HD95 {names[lab]}", True) for lab in labels]
        headers += [("cases", True)]
        rows = []
        for c in info.get("candidates", []):
            chosen = c.get("name") == info.get("chosen")
            cells = [
                f"<td>{'★' if chosen else ''}</td><td>{esc(c.get('name'))}</td>",
                td_num(c.get("mean_dice"), 4),
            ]
            if multi:
                cells += [td_num(c.get("per_label_dice", {}).get(str(lab)), 4) for lab in labels]
            cells.append(td_num(c.get("mean_hd95"), 2))
            if multi:
                cells += [td_num(c.get("per_label_hd95", {}).get(str(lab)), 2) for lab in labels]
            cells.append(td_num(c.get("n_cases"), 0))
            rows.append(f'<tr class="{"chosen" if chosen else ""}">{"".join(cells)}</tr>')
        folds = ", ".join(map(str, info.get("folds", [])))
        post_rows = []
        for lab in labels:
            rule = info.get("postprocessing", {}).get(str(lab), {"rule": "none"})
            trials = info.get("postprocessing_trials", {}).get(str(lab), {})
            tried = ", ".join(f"{k} {fmt(v, 4)}" for k, v in trials.items()) or _DASH
            post_rows.append(
                f"<tr><td>{esc(names.get(lab, lab))} ({lab})</td><td>{esc(_rule_text(rule))}</td>"
                f"<td>{esc(tried)}</td>"
                + td_num(info.get("cv_dice_per_label_postprocessed", {}).get(str(lab)), 4)
                + "</tr>"
            )
        skipped = info.get("skipped_configurations") or {}
        skipped_html = (
            "<p>Not compared (incomplete): "
            + esc("; ".join(f"{k}: {v}" for k, v in skipped.items()))
            + "</p>"
            if skipped
            else ""
        )
        estimate = info.get("estimate") or {}
        hold_out = estimate.get("kind") == "hold_out"
        what = "Hold-out" if hold_out else "Cross-validated"
        effect = (
            f"{what} Dice of the chosen model: {fmt(info.get('cv_dice'), 4)} without, "
            f"{fmt(info.get('cv_dice_postprocessed'), 4)} with post-processing."
        )
        note = (
            "<p><b>Estimate from one hold-out, not a cross-validation:</b> "
            + esc(estimate.get("text", ""))
            + ". The time budget was too short for five folds that each train long enough, so "
            "the plan trained one model on one training split for longer (plans.json, "
            "schedule.folds); that model is the one predict uses, and only its hold-out "
            "cases are scored here. With fewer cases the estimate is less certain than a "
            "5-fold one.</p>"
            if hold_out
            else ""
        )
        return (
            note
            + f"<p>Every candidate scored on the out-of-fold predictions of folds {esc(folds)} "
            f"({esc(info.get('n_cases', _DASH))} cases): mean over cases of the mean Dice over "
            "labels; HD95 in mm (the image diagonal when exactly one mask is empty). The "
            "highest Dice wins; candidates within 0.002 of it are tied and the lower HD95 "
            "wins. ★ = chosen (source: inference.json).</p>"
            + table(headers, rows, sortable=True, table_id="cv-table")
            + skipped_html
            + "<h3>Post-processing</h3><p>A rule is kept for a label only if it raises that "
            "label's cross-validated Dice (mean Dice per rule tried, below).</p>"
            + table(["label", "decision", "Dice per rule tried", ("Dice after", True)], post_rows)
            + f"<p><b>{esc(effect)}</b></p>"
            + _scale_views_html(info.get("scale_views"))
        )
    # No find-best yet: the folds' own validation metrics.
    if not any(s.validation for fs in data.folds.values() for s in fs):
        return missing(
            "No inference.json and no validated fold yet: nothing to compare. Train the folds "
            f"(autoseg plan-and-train {data.dataset_ref}), then run autoseg find-best."
        )
    headers = ["configuration", "folds validated", ("cases", True), ("mean Dice", True)]
    if multi:
        headers += [(f"Dice {names[lab]}", True) for lab in labels]
    headers += [("mean HD95 (mm)", True)]
    rows = []
    best = max(
        (
            (float(np.mean(d)), c)
            for c, fs in data.folds.items()
            if (d := [x for s in fs if s.validation for x in fold_mean_dice(s, labels)])
        ),
        default=(math.nan, ""),
    )[1]
    for config, statuses in data.folds.items():
        per_case = [pc for s in statuses if s.validation for pc in s.validation_cases().values()]
        if not per_case:
            continue
        done = [str(s.fold) for s in statuses if s.validation]
        cells = [
            f"<td>{esc(config)}</td><td>{esc(', '.join(done))} of {len(statuses)}</td>",
            td_num(len(per_case), 0),
            td_num(mean_metric(per_case, "dice", labels), 4),
        ]
        if multi:
            cells += [td_num(mean_metric(per_case, "dice", [lab]), 4) for lab in labels]
        cells.append(td_num(mean_metric(per_case, "hd95_mm_filled", labels), 2))
        rows.append(f'<tr class="{"chosen" if config == best else ""}">{"".join(cells)}</tr>')
    return (
        missing(
            "No inference.json yet (find-best has not run): below are the configurations' own "
            "fold-validation metrics, without ensembles or post-processing. Run autoseg "
            f"find-best {data.dataset_ref} once every fold is trained."
        )
        + table(headers, rows, sortable=True, table_id="cv-table")
        + '<p class="note">Highlighted: highest mean Dice so far. Source: '
        "&lt;config&gt;/fold_&lt;k&gt;/validation/metrics.json.</p>"
    )


def _scale_views_html(views: dict | None) -> str:
    """find-best's scale-view trial in one paragraph (inference.json ``scale_views``)."""
    if not views:
        return ""
    scales = " / ".join(f"{float(v):g}" for v in views.get("scales", []))
    verdict = "kept: predict averages the views" if views.get("adopted") else "not kept"
    return (
        f"<h3>Scale views</h3><p>Predicting each case also at finer grids ({esc(scales)}: "
        f"structures that much larger) — {esc(verdict)}. {esc(views.get('reason', ''))} "
        f"(Dice before post-processing, {esc(views.get('n_cases', _DASH))} out-of-fold cases: "
        f"{esc(views.get('cases_better', _DASH))} better, {esc(views.get('cases_worse', _DASH))} "
        "worse; kept only above +" + fmt(views.get("min_gain"), 3) + ").</p>"
    )
