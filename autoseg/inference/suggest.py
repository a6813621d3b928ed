"""Which unlabelled scans to label next: the model's most uncertain ones, but not near-copies.

``autoseg suggest-labels`` predicts every unlabelled scan with uncertainty
(:mod:`autoseg.inference.uncertainty`), then chooses K of them greedily:

1. the scan with the highest score (mean normalised entropy around the predicted nerve);
2. then, each time, the scan maximising  score × diversity, where
   diversity = min(1, d / 1.0) and d is the distance from the scan to the nearest scan
   chosen so far.

Uncertainty alone would suggest ten consecutive frames of one ultrasound sweep that the model
finds equally hard: labelling the first teaches most of what the other nine would. The
product needs no weight to tune (an additive mix would), keeps the most uncertain scan first,
gives a copy of a chosen scan a value of 0 so it comes only after every different scan with a
score above 0, and lets a clearly more uncertain scan win over a slightly more different one.

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
from collections.abc import Sequence
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
    distance: float | None  # to the nearest scan chosen before it (None for the first)
    nearest: int | None  # that scan's index
    passed_over: int  # more uncertain candidates not chosen when this one was


def select_diverse(scores: Sequence[float], features: np.ndarray, k: int) -> list[Pick]:
    """Greedy choice of ``k`` candidates by score × min(1, d / 1.0) (see the module
    docstring). Ties go to the higher score, then the lower index. When every remaining value
    is 0 (all scores 0, or only copies left) the most different remaining candidate is next."""
    scores = np.asarray(scores, dtype=np.float64)
    feats = np.asarray(features, dtype=np.float32)
    n = len(scores)
    k = min(int(k), n)
    by_score = sorted(range(n), key=lambda i: (-scores[i], i))
    min_dist = np.full(n, np.inf)
    nearest = np.full(n, -1)
    chosen: list[int] = []
    picks: list[Pick] = []
    for _ in range(k):
        diversity = np.minimum(1.0, min_dist / DIVERSE_DISTANCE) if chosen else np.ones(n)
        value = scores * diversity
        value[chosen] = -np.inf
        fallback = chosen and value.max() <= 0
        key = np.where(np.isin(np.arange(n), chosen), -np.inf, min_dist) if fallback else value
        best = max((i for i in by_score if i not in chosen), key=lambda i: key[i])
        rank = by_score.index(best)
        passed = sum(1 for i in by_score[:rank] if i not in chosen)
        picks.append(
            Pick(
                best,
                None if not chosen else float(min_dist[best]),
                None if not chosen else int(nearest[best]),
                passed,
            )
        )
        chosen.append(best)
        d = thumbnail_distance(feats[best], feats)
        closer = d < min_dist
        min_dist = np.where(closer, d, min_dist)
        nearest = np.where(closer, best, nearest)
    return picks


@dataclass
class Suggestions:
    rows: list[dict[str, Any]]  # in the order chosen
    ranking: list[dict[str, Any]]  # every predicted scan, most uncertain first
    failed: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None


def suggestion_reason(pick: Pick, score: float, rank: int, n: int, nearest_case: str | None) -> str:
    """One line on why a scan is on the list."""
    if pick.distance is None:
        return f"the most uncertain scan: score {score:.3f}, rank {rank} of {n}"
    text = (
        f"uncertainty {score:.3f}, rank {rank} of {n}; distance {pick.distance:.2f} to the "
        f"nearest chosen scan {nearest_case} (0 identical, 1.41 unrelated)"
    )
    if pick.passed_over:
        text += (
            f"; chosen before {pick.passed_over} more uncertain scan(s) that are closer to a "
            "chosen one"
        )
    return text


COLUMNS = (
    "order",
    "case",
    "score",
    "uncertainty_rank",
    "distance",
    "nearest_chosen",
    "disagreement",
    "reason",
    "image",
)


def suggest_labels(
    predictor: Any,
    inputs: Sequence[Any],
    out_dir: str | os.PathLike,
    k: int,
    *,
    progress: bool = True,
) -> Suggestions:
    """Predict ``inputs`` with uncertainty into ``out_dir/predictions`` and choose ``k`` to
    label; writes ``out_dir/suggestions.csv`` and ``suggestions.json`` (atomically, once
    every scan is predicted)."""
    from autoseg.inference.predict import _read, predict_cases

    if int(k) < 1:
        raise AutosegError(f"-n {k}: ask for at least one scan", fix="give -n 1 or more")
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
    features = np.stack([thumbnail(_read(c)[0]) for c in cases])
    scores = [summary.uncertainty[c.case_id]["score"] for c in cases]
    order = sorted(range(len(cases)), key=lambda i: (-scores[i], i))
    rank = {i: r + 1 for r, i in enumerate(order)}
    n = len(cases)
    rows = []
    for j, pick in enumerate(select_diverse(scores, features, k), start=1):
        i = pick.index
        near = None if pick.nearest is None else cases[pick.nearest].case_id
        rows.append(
            {
                "order": j,
                "case": cases[i].case_id,
                "score": round(scores[i], 6),
                "uncertainty_rank": rank[i],
                "distance": None if pick.distance is None else round(pick.distance, 3),
                "nearest_chosen": near,
                "disagreement": summary.uncertainty[cases[i].case_id]["disagreement"],
                "reason": suggestion_reason(pick, scores[i], rank[i], n, near),
                "image": str(cases[i].paths[0]),
            }
        )
    ranking = [
        {"case": cases[i].case_id, "rank": rank[i], **summary.uncertainty[cases[i].case_id]}
        for i in order
    ]
    write_json_atomic(
        out_dir / "suggestions.json",
        {
            "n_requested": int(k),
            "n_candidates": n,
            "method": "greedy: score x min(1, d / 1.0), d = RMS distance of z-scored "
            "16x16 (8x16x16) thumbnails to the nearest chosen scan",
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


def default_output(dataset: str | int | os.PathLike, root: str | os.PathLike | None = None):
    """``$AUTOSEG_ROOT/results/<dataset>/suggestions``: where the report looks for them."""
    from autoseg.paths import dataset_name, resolve_dataset, results_dir

    return results_dir(root) / dataset_name(resolve_dataset(dataset, root)) / "suggestions"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The suggestions as a plain-text table, the reason last."""
    head = ("#", "case", "score", "rank", "distance", "reason")
    body = [
        (
            str(r["order"]),
            r["case"],
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
        cells = [v.ljust(w) if c == 1 else v.rjust(w) for c, (v, w) in enumerate(zip(x, widths))]
        lines.append("  ".join([*cells, x[-1]]))
    return "\n".join(lines)
