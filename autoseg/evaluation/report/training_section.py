"""Section 3: the training curves of every fold."""

from __future__ import annotations

import numpy as np

from autoseg.evaluation.report.constants import (
    _DASH,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    fold_mean_dice,
)
from autoseg.evaluation.report.markup import (
    esc,
    figure,
    fmt_duration,
    missing,
    table,
    td_num,
)


def section_training(data: ReportData) -> str:
    if not data.configs:
        return missing(
            f"No configuration has been trained yet (nothing under {data.res}). Run "
            f"autoseg plan-and-train {data.dataset_ref}."
        )
    labels = sorted(data.labels)
    out = []
    for config in data.configs:
        statuses = data.folds.get(config, [])
        rows, figs = [], []
        for s in statuses:
            val = fold_mean_dice(s, labels) if s.validation else []
            epochs = f"{s.epochs_run}" + (f" / {s.epochs_planned}" if s.epochs_planned else "")
            problems = "; ".join(s.problems)
            rows.append(
                "<tr>"
                f"<td>{s.fold}</td><td>{esc(s.state)}</td>"
                f'<td class="n">{esc(epochs)}</td>'
                f'<td class="n">{esc(fmt_duration(s.seconds))}</td>'
                + td_num(s.final_pseudo_dice)
                + td_num(s.best_pseudo_dice)
                + td_num(float(np.mean(val)) if val else None)
                + f'<td class="n">{len(val) if val else _DASH}</td>'
                f"<td>{esc(problems)}</td></tr>"
            )
            if s.curves is not None:
                caption = f"{config} fold {s.fold}" + (
                    f": {s.curves_note}" if s.curves_note else ""
                )
                figs.append(figure(s.curves, f"training curves {config} fold {s.fold}", caption))
            elif s.state != "not started":
                figs.append(missing(f"{config} fold {s.fold}: no training curve or log"))
        headers = [
            "fold",
            "state",
            ("epochs", True),
            ("time", True),
            ("final pseudo-Dice (EMA)", True),
            ("best pseudo-Dice (EMA)", True),
            ("validation Dice", True),
            ("val. cases", True),
            "problems",
        ]
        done = sum(s.state.startswith("validated") for s in statuses)
        out.append(
            f"<h3>{esc(config)} <span class='note'>({done} of {len(statuses)} folds "
            f"validated)</span></h3>"
            + table(headers, rows)
            + (f'<div class="grid">{"".join(figs)}</div>' if figs else "")
        )
    return (
        '<p class="note">Pseudo-Dice: Dice of validation patches during training (EMA: '
        "exponential moving average, what checkpoint_best follows). Validation Dice: mean over "
        "the fold's validation cases and labels of the full-image prediction at the end of the "
        "fold (validation/metrics.json). Time: sum of the epochs' wall time.</p>" + "".join(out)
    )
