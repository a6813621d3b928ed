"""Section 9: the learning curve (``autoseg learning-curve``), when it has been measured."""

from __future__ import annotations

import json

from autoseg.evaluation.learning_curve import FIGURE_FILE, MEAN, RESULT_FILE
from autoseg.evaluation.report.gather import ReportData, _read_png
from autoseg.evaluation.report.markup import esc, figure, missing, table, td_num
from autoseg.layout import LEARNING_CURVE


def section_learning_curve(data: ReportData) -> str:
    """Per measured configuration: the answer, the points per size and the figure; without a
    measurement, the command that makes one."""
    found = sorted((data.res / LEARNING_CURVE).glob(f"*/{RESULT_FILE}"))
    if not found:
        return missing(
            "No learning curve yet: autoseg learning-curve "
            f"{data.dataset_ref} --time-budget 20m trains the planned configuration on 25 / 50 "
            "/ 75 / 100 % of the training subjects and says how many more labelled subjects a "
            "higher Dice needs (documentation/learning_curve.md)."
        )
    parts = []
    for path in found:
        result = json.loads(path.read_text(encoding="utf-8"))
        fit = result["fits"][MEAN]
        if "refused" in fit:
            how = esc(fit["refused"])
        else:
            pct = round(result["confidence"] * 100)
            how = (
                f"error 1 − Dice = {fit['a']:.3f}·n<sup>−{fit['b']:.3f}</sup> (b's {pct} % band "
                f"{fit['b_low']:.3f} to {fit['b_high']:.3f}; r² {fit['r2']:.2f}; "
                f"{fit['n_points']} runs at {fit['n_sizes']} sizes)"
            )
        rows = [
            f'<tr><td class="n">{s["n_subjects"]}</td><td class="n">{s["runs"]}</td>'
            + td_num(s[MEAN]["mean"])
            + td_num(s[MEAN]["min"])
            + td_num(s[MEAN]["max"])
            + "</tr>"
            for s in result["sizes"]
        ]
        png = _read_png(path.parent / FIGURE_FILE)
        held = result["holdout"]
        parts.append(
            f"<h3>{esc(result['config'])}</h3>"
            f"<p><strong>{esc(result['answer']['text'])}</strong></p>"
            f"<p>Held out: {len(held['cases'])} cases of {held['subjects']} subjects (fold "
            f"{held['fold']}'s validation set); training pool {result['pool_subjects']} "
            f"subjects. {esc(result['budget']['rule'])}. Fit: {how}.</p>"
            + table(
                [
                    ("training subjects", True),
                    ("runs", True),
                    ("Dice mean", True),
                    ("min", True),
                    ("max", True),
                ],
                rows,
            )
            + (
                figure(
                    png,
                    f"learning curve {result['config']}",
                    "Held-out Dice (mean over labels) against training subjects, log scale: "
                    "each run, the mean and range per size, the power-law fit and its band.",
                )
                if png
                else missing(f"{path.parent / FIGURE_FILE} is missing or not a PNG.")
            )
        )
    return (
        '<p class="note">From results/&lt;dataset&gt;/learning_curve/&lt;config&gt;/'
        f"{RESULT_FILE}; the rule is in documentation/learning_curve.md.</p>" + "".join(parts)
    )
