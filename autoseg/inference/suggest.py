"""Which unlabelled scans to label next: the model's most uncertain ones, but not near-copies.

``autoseg suggest-labels`` predicts every unlabelled scan with uncertainty
(:mod:`autoseg.inference.uncertainty`), then chooses K of them.

By default (``strategy="typical"``, :func:`select_typical`) it ignores the uncertainty and
picks the most typical scan of each group of similar scans that nothing labelled covers yet:
on usgra-seg, with 41 labelled frames and a short budget, the uncertainty rankings below
added frames worth *less* than a random draw (4 of 4 seeds lower), the typical ones more
(with the plan's own 18-epoch schedule 4 of 4 seeds higher, +0.012 Dice;
documentation/prediction.md).
``strategy="uncertain"`` chooses greedily:

1. the scan with the highest score (mean normalised entropy where a label is plausible);
2. then, each time, the scan maximising  score × diversity, where
   diversity = min(1, d / 1.0) and d is the distance from the scan to the nearest scan
   chosen so far or labelled already (the dataset's training scans).

With several labels each has its own score and the labels take turns (``label="each"``);
``label="any"`` pools them, a label's name ranks by that label alone (:func:`score_table`).

Uncertainty alone would suggest ten consecutive frames of one ultrasound sweep that the model
finds equally hard: labelling the first teaches most of what the other nine would. The
product needs no weight to tune (an additive mix would), keeps the most uncertain scan first,
gives a copy of a chosen (or labelled) scan a value of 0 so it comes only after every
different scan with a score above 0, and lets a clearly more uncertain scan win over a
slightly more different one.

The distance compares thumbnails: each channel downsampled (anti-aliased) to 16 × 16 pixels
(8 × 16 × 16 voxels for volumes) and z-scored, so it sees anatomy and layout rather than
speckle, gain or size; d is the root-mean-square difference of two thumbnails, which is
√(2 (1 − r)) for their Pearson correlation r: 0 for identical scans, √2 ≈ 1.41 for unrelated
ones (r = 0). The diversity saturates at d = 1 (r = 0.5): a scan that correlates less than
half with every chosen one counts as new, and among such scans uncertainty alone decides
(with a cap at √2 instead, the thumbnail noise of unrelated scans, d = 1.35-1.47 on the test
phantom, would reorder scans whose scores differ by less than that). Consecutive frames of a
sweep correlate at r > 0.9 (d < 0.45) and keep less than half their value.
256 numbers per scan keep the comparison of thousands of scans instant.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.io import write_json_atomic

THUMB_2D = (16, 16)
THUMB_3D = (8, 16, 16)
DIVERSE_DISTANCE = 1.0  # thumbnail distance (r = 0.5) from which a scan counts as new


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Feature vector of a (C, *spatial) image: every channel anti-aliased down to
    :data:`THUMB_2D` / :data:`THUMB_3D`, z-scored, flattened and concatenated."""
    from scipy import ndimage

    parts = []
    for channel in np.asarray(image, dtype=np.float32):
        a = channel
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        target = THUMB_2D if a.ndim == 2 else THUMB_3D
        factors = [s / t for s, t in zip(a.shape, target)]
        sigma = [max(0.0, (f - 1.0) / 2.0) for f in factors]
        if any(sigma):
            a = ndimage.gaussian_filter(a, sigma)
        small = ndimage.zoom(a, [t / s for s, t in zip(a.shape, target)], order=1)
        small = small[tuple(slice(0, t) for t in target)]
        std = float(small.std())
        z = (small - small.mean()) / std if std > 1e-6 else np.zeros_like(small)
        parts.append(z.ravel().astype(np.float32))
    return np.concatenate(parts)


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference between feature vectors (``b`` may be (n, F))."""
    return np.sqrt(np.mean((np.asarray(b) - np.asarray(a)) ** 2, axis=-1))


@dataclass
class Pick:
    index: int  # into the candidates
    distance: float | None  # to the nearest scan chosen or labelled before it (None: neither)
    nearest: int | None  # that scan's index: a candidate, or len(candidates) + j for labelled j
    passed_over: int  # candidates more uncertain (in this turn's column) not chosen now
    turn: int = 0  # the score column this pick was made for (a label, when labels take turns)
    group: int | None = None  # typical picks: the size of the group of similar scans it stands for


def descending(values: Sequence[float] | np.ndarray) -> list[int]:
    """Indices from the highest value to the lowest, ties in index order: every ranking and
    "rank k of n" of the suggestions uses this one order."""
    return sorted(range(len(values)), key=lambda i: (-float(values[i]), i))


def select_diverse(
    scores: Sequence[Any] | np.ndarray,
    features: np.ndarray,
    k: int,
    known: np.ndarray | None = None,
) -> list[Pick]:
    """Greedy choice of ``k`` candidates by score × min(1, d / 1.0) (see the module
    docstring). ``scores`` is one number per candidate, or one column per label (n, L):
    then the columns take turns (pick j uses column j mod L). d is the distance to the
    nearest scan chosen so far or in ``known`` (features of scans already labelled), so a
    copy of a labelled scan is worth as little as a copy of a chosen one. Ties go to the
    higher score, then the lower index. When every remaining value is 0 (all scores 0, or
    only copies left) the most different remaining candidate is next."""
    table = np.asarray(scores, dtype=np.float64)
    if table.ndim == 1:
        table = table[:, None]
    feats = np.asarray(features, dtype=np.float32)
    n, n_cols = table.shape
    k = min(int(k), n)
    orders = [descending(table[:, c]) for c in range(n_cols)]
    min_dist = np.full(n, np.inf)
    nearest = np.full(n, -1)
    for j, row in enumerate(np.asarray(known if known is not None else [], np.float32)):
        d = thumbnail_distance(row, feats)
        closer = d < min_dist
        min_dist = np.where(closer, d, min_dist)
        nearest = np.where(closer, n + j, nearest)
    taken = np.zeros(n, bool)
    picks: list[Pick] = []
    for step in range(k):
        turn = step % n_cols
        by_score = orders[turn]
        seen = np.isfinite(min_dist)
        diversity = np.where(seen, np.minimum(1.0, min_dist / DIVERSE_DISTANCE), 1.0)
        value = table[:, turn] * diversity
        value[taken] = -np.inf
        fallback = seen.any() and value.max() <= 0
        key = np.where(taken, -np.inf, min_dist) if fallback else value
        best = max((i for i in by_score if not taken[i]), key=lambda i: key[i])
        rank = by_score.index(best)
        passed = sum(1 for i in by_score[:rank] if not taken[i])
        finite = bool(np.isfinite(min_dist[best]))
        picks.append(
            Pick(
                best,
                float(min_dist[best]) if finite else None,
                int(nearest[best]) if finite else None,
                passed,
                turn,
            )
        )
        taken[best] = True
        d = thumbnail_distance(feats[best], feats)
        closer = d < min_dist
        min_dist = np.where(closer, d, min_dist)
        nearest = np.where(closer, best, nearest)
    return picks


TYPICAL_NEIGHBOURS = 20  # the density of a scan: its mean distance to this many nearest ones


def neighbour_spread(points: np.ndarray, neighbours: int) -> np.ndarray:
    """Per point, the mean Euclidean distance to its ``neighbours`` nearest other points (0
    for a lone point): small where scans crowd. scikit-learn's neighbour search works in
    chunks, so a group of thousands of scans never needs its full distance matrix."""
    from sklearn.neighbors import NearestNeighbors

    q = min(int(neighbours), len(points) - 1)
    if q < 1:
        return np.zeros(len(points))
    dist, _ = NearestNeighbors(n_neighbors=q + 1).fit(points).kneighbors(points)
    return dist[:, 1:].mean(axis=1)


def select_typical(
    features: np.ndarray, k: int, known: np.ndarray | None = None, seed: int = 0
) -> list[Pick]:
    """``k`` typical scans of the groups that no labelled scan covers yet (TypiClust,
    Hacohen et al. 2022): the candidates and the ``known`` (labelled) scans together are
    clustered into len(known) + k groups (k-means on the thumbnails); each pick takes the
    largest group without a labelled or chosen scan, and from it the most typical candidate
    — the one with the smallest mean distance to its (up to) 20 nearest neighbours in the
    group. Why: with few labels and a weak model, uncertainty points at odd scans (Hacohen
    et al. found uncertainty sampling below random at small budgets and typical examples
    above it); typical scans of uncovered groups teach what most unlabelled scans look like.
    There are always at least k uncovered groups (only len(known) can hold a labelled scan),
    each with a candidate."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    feats = np.asarray(features, np.float32)
    old = np.asarray(known if known is not None else np.zeros((0, feats.shape[1])), np.float32)
    n, m = len(feats), len(old)
    k = min(int(k), n)
    if k < 1:
        return []
    points = np.concatenate([old, feats]) if m else feats
    n_groups = min(m + k, len(points))
    with warnings.catch_warnings():  # identical scans: fewer distinct groups than asked
        warnings.simplefilter("ignore", ConvergenceWarning)
        groups = KMeans(n_clusters=n_groups, n_init=4, random_state=seed).fit_predict(points)
    sizes = np.bincount(groups, minlength=n_groups)
    covered = set(groups[:m].tolist())
    cand_group = groups[m:]
    picks: list[Pick] = []
    taken = np.zeros(n, bool)
    for _ in range(k):
        left = cand_group[~taken]
        open_groups = [g for g in range(n_groups) if g not in covered and (left == g).any()]
        if not open_groups:  # (only when k-means merged points) the largest group again
            open_groups = sorted({int(g) for g in left})
        g = max(open_groups, key=lambda g: (sizes[g], -g))
        members = np.flatnonzero(groups == g)
        spread = neighbour_spread(points[members], TYPICAL_NEIGHBOURS)
        options = [
            (spread[j], int(i - m)) for j, i in enumerate(members) if i >= m and not taken[i - m]
        ]
        _, best = min(options)
        picks.append(Pick(best, None, None, 0, 0, int(sizes[g])))
        taken[best] = True
        covered.add(g)
    return picks


EACH = "each"  # labels take turns (the default)
ANY = "any"  # one score per scan over the voxels where any label is plausible


def check_label(label: str, names: Sequence[str]) -> None:
    """Refuse a ``--label`` that is not 'each', 'any' or a foreground label's name, before
    anything is predicted."""
    if label in (EACH, ANY) or label in names:
        return
    raise AutosegError(
        f"--label {label}: not a label of this model (its labels: {', '.join(names)})",
        fix=f"give one of {', '.join(names)}, '{EACH}' (labels take turns) or '{ANY}'",
    )


def score_table(
    summaries: Sequence[Mapping[str, Any]], label: str = EACH
) -> tuple[np.ndarray, list[str]]:
    """The score columns :func:`select_diverse` ranks by, and their names, from the
    per-case uncertainty summaries (:meth:`CaseUncertainty.summary`).

    ``label``: a label name → that label's score alone (a lab whose target is one
    structure); ``"any"`` → the case score over the voxels where any label is plausible;
    ``"each"`` → one column per label, taking turns. Why turns are the default: with one
    pooled score the label the model is least sure of fills the list (usgra-seg: the nerve),
    and the other labels get fewer new examples than a random draw gives them (measured:
    documentation/prediction.md). A dataset with one label gets the same list either way."""
    names = list(dict.fromkeys(n for s in summaries for n in s.get("labels", {})))
    if label == ANY or (label == EACH and not names):
        return np.array([[float(s["score"])] for s in summaries]).reshape(-1, 1), [ANY]
    if label == EACH:
        chosen = names
    else:
        check_label(label, names)
        chosen = [label]
    table = np.array(
        [
            [float(s.get("labels", {}).get(n, {}).get("score", 0.0)) for n in chosen]
            for s in summaries
        ]
    )
    return table.reshape(len(summaries), len(chosen)), chosen


@dataclass
class Suggestions:
    rows: list[dict[str, Any]]  # in the order chosen
    ranking: list[dict[str, Any]]  # every predicted scan, most uncertain first
    failed: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None


def suggestion_reason(
    pick: Pick,
    score: float,
    rank: int,
    n: int,
    nearest_case: str | None,
    column: str | None = None,
) -> str:
    """One line on why a scan is on the list (``column``: the label whose turn it was)."""
    if pick.group is not None:
        what = (
            "a scan unlike any labelled or chosen one (a group of its own)"
            if pick.group == 1
            else f"the most typical of {pick.group} similar scans that no labelled or chosen "
            "scan covers yet"
        )
        return f"{what} (uncertainty {score:.3f}, rank {rank} of {n})"
    of = "" if column in (None, ANY) else f" for {column}"
    if pick.distance is None:
        return f"the most uncertain scan{of}: score {score:.3f}, rank {rank} of {n}"
    text = (
        f"uncertainty{of} {score:.3f}, rank {rank} of {n}; distance {pick.distance:.2f} to the "
        f"nearest {nearest_case} (0 identical, 1.41 unrelated)"
    )
    if pick.passed_over:
        text += (
            f"; chosen before {pick.passed_over} more uncertain scan(s) that are closer to a "
            "chosen or labelled one"
        )
    return text


COLUMNS = (
    "order",
    "case",
    "label",
    "score",
    "uncertainty_rank",
    "distance",
    "nearest_chosen",
    "disagreement",
    "reason",
    "image",
)


UNCERTAIN, TYPICAL = "uncertain", "typical"
STRATEGIES = (UNCERTAIN, TYPICAL)


def suggest_labels(
    predictor: Any,
    inputs: Sequence[Any],
    out_dir: str | os.PathLike,
    k: int,
    *,
    label: str = EACH,
    strategy: str = TYPICAL,
    labelled: Sequence[Any] = (),
    progress: bool = True,
) -> Suggestions:
    """Predict ``inputs`` with uncertainty into ``out_dir/predictions`` and choose ``k`` to
    label: typical scans of uncovered groups (:func:`select_typical`, the default), or
    ``strategy="uncertain"``: uncertainty × diversity ranked as ``label`` says
    (:func:`score_table`, :func:`select_diverse`).
    ``labelled`` (cases, as ``inputs``) are the scans labelled already: a candidate like one
    of them is worth less, as one like a chosen scan is. Writes ``out_dir/suggestions.csv``
    and ``suggestions.json`` (atomically, once every scan is predicted)."""
    from autoseg.inference.predict import _read, predict_cases

    if int(k) < 1:
        raise AutosegError(f"-n {k}: ask for at least one scan", fix="give -n 1 or more")
    if strategy not in STRATEGIES:
        raise AutosegError(
            f"--strategy {strategy}: unknown", fix=f"give one of {', '.join(STRATEGIES)}"
        )
    plan = getattr(predictor, "plan", None)
    if plan is not None:
        check_label(label, plan.foreground_names)
    out_dir = Path(out_dir)
    summary = predict_cases(
        predictor, inputs, out_dir / "predictions", uncertainty=True, progress=progress
    )
    cases = [c for c in inputs if c.case_id in summary.uncertainty]
    if not cases:
        raise AutosegError(
            "no scan could be predicted",
            path=out_dir / "predictions" / "predictions.json",
            fix="see the failures listed there",
        )
    summaries = [summary.uncertainty[c.case_id] for c in cases]
    if strategy == TYPICAL:
        table, columns = score_table(summaries, ANY)
    else:
        table, columns = score_table(summaries, label)
    features = np.stack([thumbnail(_read(c)[0]) for c in cases])
    known = [thumbnail(_read(c)[0]) for c in labelled]
    known_features = np.stack(known) if known else None
    n = len(cases)
    ids = [c.case_id for c in cases] + [c.case_id for c in labelled]
    kinds = ["chosen scan"] * n + ["labelled scan"] * len(labelled)
    ranks = [
        {i: r + 1 for r, i in enumerate(descending(table[:, col]))} for col in range(table.shape[1])
    ]
    if strategy == TYPICAL:
        picks = select_typical(features, k, known_features)
    else:
        picks = select_diverse(table, features, k, known_features)
    rows = []
    for j, pick in enumerate(picks, start=1):
        i, col = pick.index, pick.turn
        near = None if pick.nearest is None else ids[pick.nearest]
        near_text = None if pick.nearest is None else f"{kinds[pick.nearest]} {near}"
        score = float(table[i, col])
        rows.append(
            {
                "order": j,
                "case": cases[i].case_id,
                "label": TYPICAL if strategy == TYPICAL else columns[col],
                "score": round(score, 6),
                "uncertainty_rank": ranks[col][i],
                "distance": None if pick.distance is None else round(pick.distance, 3),
                "nearest_chosen": near,
                "disagreement": summary.uncertainty[cases[i].case_id]["disagreement"],
                "reason": suggestion_reason(pick, score, ranks[col][i], n, near_text, columns[col]),
                "image": str(cases[i].paths[0]),
            }
        )
    pooled = descending([s["score"] for s in summaries])
    ranking = [
        {"case": cases[i].case_id, "rank": r + 1, **summaries[i]} for r, i in enumerate(pooled)
    ]
    write_json_atomic(
        out_dir / "suggestions.json",
        {
            "n_requested": int(k),
            "n_candidates": n,
            "label": label,
            "strategy": strategy,
            "labelled": len(labelled),
            "columns": columns,
            "method": "greedy: score x min(1, d / 1.0), d = RMS distance of z-scored "
            "16x16 (8x16x16) thumbnails to the nearest chosen scan; with several score "
            "columns (one per label) the columns take turns",
            "suggestions": rows,
            "ranking": ranking,
            "failed": summary.failed,
        },
    )
    from autoseg.io.atomic import atomic_path

    with atomic_path(out_dir / "suggestions.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Suggestions(rows, ranking, dict(summary.failed), out_dir)


def labelled_cases(dataset: str | int | os.PathLike, root: str | os.PathLike | None = None):
    """The dataset's labelled training scans as prediction inputs (what the model was trained
    on, so what is already labelled); none when the raw dataset is not here (an imported
    model)."""
    from autoseg.inference.predict import InputCase
    from autoseg.io.dataset import list_cases, load_dataset_json
    from autoseg.paths import resolve_dataset

    try:
        raw = resolve_dataset(dataset, root)
        ds = load_dataset_json(raw)
    except (AutosegError, OSError):
        return []
    cases = [c for c in list_cases(raw, ds) if all(Path(p).exists() for p in c.images)]
    return [InputCase(c.case_id, tuple(c.images), ds.file_ending) for c in cases]


def default_output(dataset: str | int | os.PathLike, root: str | os.PathLike | None = None):
    """``$AUTOSEG_ROOT/results/<dataset>/suggestions``: where the report looks for them."""
    from autoseg.paths import dataset_name, resolve_dataset, results_dir

    return results_dir(root) / dataset_name(resolve_dataset(dataset, root)) / "suggestions"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The suggestions as a plain-text table, the reason last."""
    head = ("#", "case", "for", "score", "rank", "distance", "reason")
    body = [
        (
            str(r["order"]),
            r["case"],
            str(r.get("label", ANY)),
            f"{r['score']:.3f}",
            str(r["uncertainty_rank"]),
            "-" if r["distance"] is None else f"{r['distance']:.2f}",
            r["reason"],
        )
        for r in rows
    ]
    widths = [max(len(x[c]) for x in [head, *body]) for c in range(len(head) - 1)]
    lines = []
    for x in [head, *body]:
        cells = [
            v.ljust(w) if c in (1, 2) else v.rjust(w) for c, (v, w) in enumerate(zip(x, widths))
        ]
        lines.append("  ".join([*cells, x[-1]]))
    return "\n".join(lines)
