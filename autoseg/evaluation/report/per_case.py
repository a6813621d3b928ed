"""Sections 5 and 6: per-case metrics (sortable) and the worst cases as overlay figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import FAILURE_DICE
from autoseg.evaluation.report import assets
from autoseg.evaluation.report.cases import (
    CaseJob,
    CaseResult,
    segment_case,
)
from autoseg.evaluation.report.cross_validation import (
    _rule_text,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    Source,
)
from autoseg.evaluation.report.markup import (
    esc,
    figure,
    fmt,
    missing,
    table,
    td_num,
    td_size,
)
from autoseg.io import read_image
from autoseg.io.image import collapse_grey_rgb


def _label_unit(ndim: int) -> tuple[str, str]:
    """(volume unit, word): mm³ in 3D; in 2D the 'volume' is an area in mm²."""
    return ("mm³", "volume") if ndim == 3 else ("mm²", "area")


def section_cases(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    if source is None:
        return missing(
            "No out-of-fold predictions yet: per-case metrics appear once a fold is validated."
        )
    labels = sorted(data.labels)
    names = data.labels
    multi = len(labels) > 1
    has_cohorts = bool(data.cohorts)
    ndim = next((len(r.spacing) for r in results if r.spacing), 3)
    unit, _ = _label_unit(ndim)
    headers: list[str | tuple[str, bool]] = ["case"]
    if has_cohorts:
        headers.append("cohort")
    headers.append(("fold", True))
    if multi:
        headers.append(("mean Dice", True))
    for lab in labels:
        p = f"{names[lab]} " if multi else ""
        headers += [
            (f"{p}Dice", True),
            (f"{p}HD95 (mm)", True),
            (f"{p}ASSD (mm)", True),
            (f"{p}precision", True),
            (f"{p}recall", True),
            (f"{p}reference ({unit})", True),
            (f"{p}predicted ({unit})", True),
            (f"{p}components", True),
        ]
    headers.append("failure")
    ordered = sorted(results, key=lambda r: (math.isnan(r.mean_dice), r.mean_dice, r.case))
    rows = []
    for r in ordered:
        cells = [f"<td>{esc(r.case)}</td>"]
        if has_cohorts:
            cells.append(f"<td>{esc(data.cohorts.get(r.case, ''))}</td>")
        cells.append(td_num(r.fold, 0))
        if r.error:
            n_cols = (1 if multi else 0) + 8 * len(labels)
            cells.append(f'<td colspan="{n_cols}" class="error">{esc(r.error)}</td><td></td>')
            rows.append(f"<tr>{''.join(cells)}</tr>")
            continue
        if multi:
            cells.append(td_num(r.mean_dice))
        for lab in labels:
            m = r.metrics[lab]
            cells += [
                td_num(m["dice"]),
                td_num(m["hd95_mm"], 2),
                td_num(m["assd_mm"], 2),
                td_num(m["precision"]),
                td_num(m["recall"]),
                td_size(m["volume_ref_mm3"]),
                td_size(m["volume_pred_mm3"]),
                td_num(m["n_pred_components"], 0),
            ]
        flag = '<span class="fail-flag">yes</span>' if r.failed else ""
        cells.append(f'<td data-v="{int(r.failed)}">{flag}</td>')
        rows.append(f'<tr class="{"fail" if r.failed else ""}">{"".join(cells)}</tr>')
    post = (
        "post-processing as decided in inference.json ("
        + "; ".join(
            f"{names.get(lab, lab)}: {_rule_text(r)}" for lab, r in source.postprocessing.items()
        )
        + ")"
        if source.postprocessing
        else "no post-processing"
    )
    scored = [r for r in results if not r.error]
    n_fail = sum(r.failed for r in scored)
    notes = "".join(missing(n) for n in source.notes)
    unlisted = sorted({c.case_id for c in data.cases} - set(source.case_fold))
    if unlisted and not source.notes:
        notes += missing(
            f"{len(unlisted)} training case(s) have no out-of-fold prediction of {source.name}: "
            + ", ".join(unlisted[:10])
            + (" …" if len(unlisted) > 10 else "")
        )
    return (
        f"<p>Out-of-fold predictions of <b>{esc(source.name)}</b>: {esc(source.how)}; "
        f"{esc(post)}. Each case is predicted by the fold model that did not train on it and "
        "compared with labelsTr by autoseg.evaluation.compute_metrics (HD95/ASSD empty when "
        f"one mask is empty). Sorted worst first; click a header to sort. {n_fail} of "
        f"{len(scored)} case(s) failed (Dice &lt; {FAILURE_DICE}, highlighted).</p>"
        + notes
        + table(headers, rows, sortable=True, table_id="case-table")
        + (
            '<p class="note">min-size thresholds are the final ones of inference.json '
            "(learned on all training labels); find-best learned them per fold, so its "
            "post-processed CV Dice can differ slightly.</p>"
            if any(r.get("rule") == "min_size" for r in source.postprocessing.values())
            else ""
        )
    )


def overlay_panels(
    image: np.ndarray | None, ref: np.ndarray, seg: np.ndarray, case: str
) -> list[assets.OverlayPanel]:
    """The slices to show: 2D -> the image; 3D -> three slices along z spread over the
    reference's extent (a sixth in from each end and the middle: proximal, middle and distal
    nerve); with fewer than three reference slices, the slices with the most predicted, then
    the middle."""
    ref_fg = ref > 0
    seg_fg = seg > 0
    if image is None or image.shape != ref.shape:
        image = np.zeros(ref.shape, dtype=np.float32)
    if ref.ndim == 2:
        return [assets.OverlayPanel(image, ref_fg, seg_fg, "")]
    depth = ref.shape[0]
    ref_slices = np.flatnonzero(ref_fg.reshape(depth, -1).any(axis=1))
    chosen: list[int] = []
    if ref_slices.size >= 3:
        for q in (1 / 6, 1 / 2, 5 / 6):
            chosen.append(int(ref_slices[min(ref_slices.size - 1, int(q * ref_slices.size))]))
    else:
        chosen = [int(s) for s in ref_slices]
        pred_area = seg_fg.reshape(depth, -1).sum(axis=1)
        for s in np.argsort(-pred_area, kind="stable"):
            if pred_area[s] == 0 or len(chosen) >= 3:
                break
            if int(s) not in chosen:
                chosen.append(int(s))
        for s in (depth // 2, depth // 2 - 1, depth // 2 + 1):
            if len(chosen) < min(3, depth) and 0 <= s < depth and s not in chosen:
                chosen.append(s)
    chosen = sorted(dict.fromkeys(chosen))
    return [
        assets.OverlayPanel(
            image[k], ref_fg[k], seg_fg[k], f"slice z = {k} ({int(ref_fg[k].sum())} ref. voxels)"
        )
        for k in chosen
    ]


def read_grey(path: Path | None) -> np.ndarray | None:
    """Channel 0 of a case as a float image (grey RGB collapsed; colour: mean of channels)."""
    if path is None or not path.is_file():
        return None
    data = read_image(path)
    arr = data.array
    if arr.ndim > data.geometry.ndim:
        try:
            arr = collapse_grey_rgb(arr, path)
        except AutosegError:
            arr = arr[..., :3].mean(axis=-1)
    return np.asarray(arr, dtype=np.float32)


def section_worst(
    data: ReportData,
    source: Source | None,
    results: list[CaseResult],
    jobs: Mapping[str, CaseJob],
    max_worst: int,
) -> str:
    if source is None:
        return missing("No out-of-fold predictions yet.")
    scored = sorted((r for r in results if not r.error), key=lambda r: (r.mean_dice, r.case))
    if not scored:
        return missing("No case could be scored (see the per-case table).")
    if max_worst <= 0:
        return '<p class="note">Not requested (max_worst = 0).</p>'
    figs = []
    for r in scored[:max_worst]:
        job = jobs[r.case]
        seg, ref, spacing = segment_case(job)
        image = read_grey(job.image)
        panels = overlay_panels(image, ref, seg, r.case)
        cohort = data.cohorts.get(r.case)
        title = f"{r.case}: Dice {r.mean_dice:.3f}" + (f" ({cohort})" if cohort else "")
        png = assets.plot_overlays(panels, spacing[-2:], title)
        scores = "; ".join(
            f"{data.labels[lab]}: Dice {fmt(m['dice'])}, HD95 {fmt(m['hd95_mm'], 1)} mm, "
            f"{int(m['n_pred_components'])} predicted component(s)"
            for lab, m in r.metrics.items()
        )
        figs.append(figure(png, f"overlay {r.case}", f"{r.case} (fold {r.fold}): {scores}"))
    where = (
        "three slices along z spread over the reference nerve (proximal, middle, distal)"
        if len(scored[0].spacing) == 3
        else "the whole frame"
    )
    return (
        f"<p>The {len(figs)} lowest-Dice case(s) of {esc(source.name)}: image in grey "
        "(1st-99th percentile window), reference contour <b style='color:#00a000'>green</b>, "
        "prediction contour <b style='color:#e00000'>red</b>, cropped to a window around "
        f"both (at least 30 mm); {where}.</p>" + "".join(figs)
    )
