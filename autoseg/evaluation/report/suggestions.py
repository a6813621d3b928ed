"""Section: the scans ``autoseg suggest-labels`` suggested labelling next, when it has run."""

from __future__ import annotations

import json
from pathlib import Path

from autoseg.evaluation.report.markup import esc, missing, table, td_num

SUGGESTIONS_FILE = Path("suggestions") / "suggestions.json"


def section_suggestions(res: Path) -> str:
    """The list in ``<results>/suggestions/suggestions.json`` (suggest-labels' default output),
    in the order chosen, with each reason."""
    path = Path(res) / SUGGESTIONS_FILE
    if not path.is_file():
        return missing(
            "No suggestions yet: 'autoseg suggest-labels -i UNLABELLED/ -d DATASET -n K' "
            "lists the unlabelled scans to label next."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = [
        f'<tr><td class="n">{int(r["order"])}</td><td>{esc(r["case"])}</td>'
        f"<td>{esc(r.get('label', 'any'))}</td>{td_num(r['score'])}{td_num(r.get('disagreement'))}"
        f'<td class="n">{int(r["uncertainty_rank"])}</td>{td_num(r.get("distance"), 2)}'
        f"<td>{esc(r['reason'])}</td></tr>"
        for r in data.get("suggestions", [])
    ]
    headers = [
        ("#", True),
        "case",
        "for",
        ("uncertainty", True),
        ("disagreement", True),
        ("rank", True),
        ("distance", True),
        "reason",
    ]
    columns = data.get("columns", ["any"])
    if data.get("strategy") == "typical":
        how = (
            "the most typical scan of each group of similar scans that no labelled or chosen "
            "scan covers yet, the largest group first (uncertainty shown for reference: mean "
            "normalised entropy where a label is plausible, 0..1)"
        )
    else:
        turns = (
            f"the labels ({', '.join(map(str, columns))}) take turns; " if len(columns) > 1 else ""
        )
        how = (
            f"{turns}the most uncertain first, then each by uncertainty × distance to the "
            "scans already chosen or labelled (uncertainty: mean normalised entropy where the "
            "label is plausible, 0..1; distance: of 16 × 16 z-scored thumbnails, 0 identical, "
            "1.41 unrelated)"
        )
    return (
        f"<p>{len(rows)} of {int(data.get('n_candidates', 0))} unlabelled scans suggested "
        f"for labelling next: {how}; documentation/prediction.md. From "
        f"<code>{esc(path)}</code>.</p>" + table(headers, rows, table_id="suggestions-table")
    )
