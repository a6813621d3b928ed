"""Scale views: does predicting each case also at finer grids help this dataset's model?

Test-time augmentation beyond mirroring. The training augmentation zooms by 0.7-1.4, so a
trained network has seen every structure at somewhat different sizes; predicting the case
again with structures 1.1x and 1.2x larger (the grid 1.1x and 1.2x finer) and averaging the
three views on the input grid is an ensemble that costs no training. On usgra-seg's hold-out
frames (ten fold-0 models, 4x coarser grid, ``benchmarks/scale_views.py``) the views
1.0 / 1.1 / 1.2 raised the nerve Dice by +0.018 on average with left-right mirroring (+0.004
to +0.039) and +0.015 without; the symmetric views 0.9 / 1.0 / 1.1 by +0.012 either way:
views that shrink the structures take pixels from a grid that was already planned as coarse
as the structures allow.

Whether it helps is a property of the dataset and the model, so find-best decides it on the
out-of-fold cases, like post-processing: every validation case is predicted by its fold's
model without and with the views (the end-of-fold validation's mirroring rule), and the views
are kept when they raise the mean Dice over labels and cases by more than ``MIN_GAIN``. The
views cost 1 + 1.1^d + 1.2^d times the prediction (3.7x in 2D, 4.1x in 3D); with a time
budget the trial stops at the deadline and then keeps nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.evaluation.find_best import TIE_DICE

SCALE_VIEWS = (1.0, 1.1, 1.2)
"""The trained view and two closer ones (see the module docstring for the measurement)."""

MIN_GAIN = TIE_DICE
"""The views are kept when the out-of-fold mean Dice rises by more than this (0.002):
find-best's tie margin, below the fold-to-fold spread, so a kept gain is not rounding."""


@dataclass
class ScaleTrial:
    """The trial's outcome, as ``inference.json`` stores it under ``scale_views``."""

    scales: tuple[float, ...]
    adopted: bool
    reason: str
    n_cases: int = 0
    seconds: float = 0.0
    without: dict[int, float] = field(default_factory=dict)
    with_views: dict[int, float] = field(default_factory=dict)
    n_better: int = 0  # cases whose mean Dice over labels rose with the views
    n_worse: int = 0
    gain_se: float | None = None  # standard error of the mean per-case gain

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales": list(self.scales),
            "adopted": self.adopted,
            "reason": self.reason,
            "n_cases": self.n_cases,
            "seconds": round(self.seconds, 1),
            "dice_without": {str(k): round(v, 6) for k, v in self.without.items()},
            "dice_with": {str(k): round(v, 6) for k, v in self.with_views.items()},
            "cases_better": self.n_better,
            "cases_worse": self.n_worse,
            "gain_standard_error": None if self.gain_se is None else round(self.gain_se, 6),
            "min_gain": MIN_GAIN,
        }

    @property
    def tta_scales(self) -> list[float]:
        """What predict uses: the views when adopted, the trained view alone otherwise."""
        return list(self.scales) if self.adopted else [1.0]


def decide_scale_views(
    without: Mapping[int, float], with_views: Mapping[int, float], min_gain: float = MIN_GAIN
) -> tuple[bool, str]:
    """Keep the views when the mean Dice over labels rises by more than ``min_gain``."""
    a = float(np.mean(list(without.values())))
    b = float(np.mean(list(with_views.values())))
    if b - a > min_gain:
        return True, f"mean Dice {a:.3f} -> {b:.3f} with the views (+{b - a:.3f})"
    return False, f"mean Dice {a:.3f} -> {b:.3f} with the views: not above +{min_gain}"


def try_scale_views(
    raw: Path,
    plan: Any,
    res: Path,
    configs: Sequence[str],
    case_folds: Mapping[str, int],
    refs: Mapping[str, Path],
    labels: Sequence[int],
    *,
    ignore_label: int | None = None,
    scales: Sequence[float] = SCALE_VIEWS,
    deadline: float | None = None,
    device: str = "auto",
    progress: bool = True,
) -> ScaleTrial:
    """Predict every out-of-fold case without and with the views and decide (see module).

    ``deadline`` (``time.monotonic()`` seconds): stop before a case that the time per case so
    far says would end after it; a stopped trial keeps nothing."""
    from autoseg.evaluation.metrics import dice, mask_unlabelled
    from autoseg.inference.predictor import Predictor, check_scales, load_fold_models
    from autoseg.io import list_cases, load_dataset_json, read_image
    from autoseg.networks.device import pick_device
    from autoseg.planning.budget import validation_mirroring
    from autoseg.preprocessing.preprocess import read_case
    from autoseg.progress import progress_bar

    scales = check_scales(scales)
    extra = [s for s in scales if s != 1.0]
    if any(plan.configurations[c].crop is not None for c in configs):
        return ScaleTrial(scales, False, "not tried: a crop configuration keeps its window")
    budgeted = plan.schedule.source == "time_budget"
    tta = not budgeted or validation_mirroring(plan.device.type)
    dev = pick_device(device)
    ds = load_dataset_json(raw)
    cases = {c.case_id: c for c in list_cases(raw, ds)}
    started = time.monotonic()
    scores: tuple[list[list[float]], list[list[float]]] = ([], [])
    by_fold: dict[int, list[str]] = {}
    for case, fold in case_folds.items():
        by_fold.setdefault(fold, []).append(case)
    bar = progress_bar(total=len(case_folds), desc="scale views", unit="case", disable=not progress)
    done = 0
    try:
        for fold, fold_cases in sorted(by_fold.items()):
            models = {c: load_fold_models(res / c, c, [fold], device=dev) for c in configs}
            predictor = Predictor(plan, models, device=dev, tta=tta)  # the trained view
            for case_id in fold_cases:
                elapsed = time.monotonic() - started
                if deadline is not None and done and time.monotonic() + elapsed / done > deadline:
                    return ScaleTrial(
                        scales,
                        False,
                        f"stopped after {done} of {len(case_folds)} cases: the time budget "
                        "ends before the rest",
                        done,
                        elapsed,
                    )
                image, geometry, _ = read_case(cases[case_id].images)
                ref = read_image(refs[case_id]).array
                _, probs, _ = predictor.predict(image, geometry)
                # the views' mean as Predictor(tta_scales=scales) averages them: per view over
                # the configurations, the trained view's prediction reused
                views = [
                    np.mean([predictor.scale_view(image, geometry, c, s) for c in configs], axis=0)
                    for s in extra
                ]
                with_views = (probs + np.sum(views, axis=0)) / np.float32(1 + len(extra))
                for p, out in zip((probs, with_views), scores):
                    seg = np.argmax(p, axis=0).astype(np.uint8).reshape(ref.shape)
                    seg, ref_l = mask_unlabelled(seg, ref, ignore_label)
                    out.append([dice(seg, ref_l, lab) for lab in labels])
                done += 1
                bar.update(1)
    finally:
        bar.close()
    without = {lab: float(np.mean([s[i] for s in scores[0]])) for i, lab in enumerate(labels)}
    with_views = {lab: float(np.mean([s[i] for s in scores[1]])) for i, lab in enumerate(labels)}
    adopted, reason = decide_scale_views(without, with_views)
    gains = np.mean(scores[1], axis=1) - np.mean(scores[0], axis=1)
    se = float(np.std(gains, ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else None
    return ScaleTrial(
        scales,
        adopted,
        reason,
        done,
        time.monotonic() - started,
        without,
        with_views,
        n_better=int((gains > 0).sum()),
        n_worse=int((gains < 0).sum()),
        gain_se=se,
    )
