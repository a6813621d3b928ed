"""Section 9: field-of-view and intensity robustness, from ``robustness.json`` (written by
``autoseg robustness``; this module only reads it and its plot)."""

from __future__ import annotations

import json

from autoseg.errors import AutosegError
from autoseg.evaluation.report import assets
from autoseg.evaluation.report.gather import ReportData
from autoseg.evaluation.report.markup import esc, figure, missing, table, td_num
from autoseg.evaluation.robustness import ROBUSTNESS_FILE, ROBUSTNESS_PLOT, plot_robustness


def section_robustness(data: ReportData) -> str:
    path = data.res / ROBUSTNESS_FILE
    if not path.is_file():
        return missing(
            f"No {ROBUSTNESS_FILE} yet. Run autoseg robustness -d {data.dataset_ref} --cases "
            "DIR (DIR holding imagesTs + labelsTs, or the dataset folder) to see how Dice "
            "moves under smaller, shifted fields of view and contrast changes."
        )
    result = json.loads(path.read_text(encoding="utf-8"))
    rows = result.get("summary")
    if not isinstance(rows, list) or not rows:
        raise AutosegError(f"{path} holds no summary rows", fix="run autoseg robustness again")
    body = []
    for r in rows:
        none = r["perturbation"] == "none"
        body.append(
            f'<tr class="{"chosen" if none else ""}"><td>{esc(r["perturbation"])}</td>'
            f'<td class="n">{esc(format(r["strength"], "g"))}</td>'
            f"<td>{esc(r['description'])}</td><td>{esc(r['label_name'])}</td>"
            + td_num(r["mean_dice"])
            + td_num(r["sd_dice"])
            + (td_num(None) if none else td_num(r["delta_dice"]))
            + f'<td class="n">{r["n_below"]}/{r["n"]}</td>'
            + f'<td class="n">{"" if none else r["n_dropped_below"]}</td></tr>'
        )
    headers = [
        "perturbation",
        ("strength", True),
        "what",
        "label",
        ("mean Dice", True),
        ("sd", True),
        ("Δ vs none", True),
        (f"Dice < {result.get('failure_dice', 0.5)}", True),
        ("newly < 0.5", True),
    ]
    png = None
    plot_path = data.res / ROBUSTNESS_PLOT
    if plot_path.is_file():
        png = plot_path.read_bytes()
    if png is None or not assets.is_png(png):
        png = plot_robustness(rows)
    model = result.get("model", {})
    return (
        f"<p>{result.get('n_cases', '?')} labelled case(s) from "
        f"<code>{esc(result.get('cases_dir', '?'))}</code> ({esc(result.get('layout', ''))}), "
        f"predicted by {esc(', '.join(model.get('configurations', [])))} unperturbed and "
        "perturbed; each perturbation starts from the original image, crops keep the label "
        "aligned. Δ: mean over cases of perturbed minus unperturbed Dice. Newly &lt; 0.5: "
        "cases at or above 0.5 unperturbed that fell below. Made by autoseg robustness "
        "(documentation/evaluation.md).</p>"
        + figure(
            png,
            "Dice under perturbations",
            "Mean Dice per strength step; step 0 is "
            "unperturbed, the legend lists the strengths in order; dashed: Dice 0.5.",
        )
        + table(headers, body, sortable=True, table_id="robustness-table")
    )
