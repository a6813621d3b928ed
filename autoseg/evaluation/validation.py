"""Out-of-fold validation: a trained fold predicts its validation cases at original geometry.

Run after each fold by ``autoseg train`` and ``plan-and-train`` (handed to
:func:`autoseg.training.run.train`); its labels, float16 probabilities and scores are what
find-best ensembles, post-processes and chooses from, and what the report shows. Here, above
training and inference, so that training never imports the predictor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError, failure_context
from autoseg.io import list_cases, load_dataset_json, write_image
from autoseg.io.atomic import atomic_path, json_safe, write_json_atomic
from autoseg.layout import ResultsLayout


def validate_fold(
    raw: Path,
    plan: Any,
    config: str,
    fold: int,
    results: Path,
    *,
    root: str | os.PathLike | None = None,
    tta: bool | None = None,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Predict the fold's validation cases at original geometry; save labels, probabilities
    (float16) and per-case metrics. ``tta=None``: mirror unless the plan is a time-budgeted
    CPU plan (the planner's rule, :func:`autoseg.planning.budget.validation_mirroring`)."""
    from autoseg.evaluation.metrics import compute_metrics, mask_unlabelled
    from autoseg.inference.predictor import Predictor, load_fold_models
    from autoseg.io import read_image
    from autoseg.networks.device import pick_device
    from autoseg.preprocessing.preprocess import read_case
    from autoseg.progress import progress_bar

    if tta is None:
        from autoseg.planning.budget import validation_mirroring

        budgeted = plan.schedule.source == "time_budget"
        tta = not budgeted or validation_mirroring(plan.device.type)
    layout = ResultsLayout(results)
    splits = json.loads(layout.splits.read_text(encoding="utf-8"))
    val_ids = splits[fold]["val"]
    dev = pick_device(device)
    models = {config: load_fold_models(results / config, config, [fold], device=dev)}
    localisers = {}
    crop = plan.configurations[config].crop
    if crop is not None:
        if not layout.checkpoint(crop.localiser, fold).is_file():
            raise AutosegError(
                f"the crop configuration is validated with its localiser {crop.localiser!r}, "
                f"whose fold {fold} is not trained",
                path=layout.fold_dir(crop.localiser, fold),
                fix=f"train {crop.localiser} first (plan-and-train does this in order)",
            )
        localisers[crop.localiser] = load_fold_models(
            results / crop.localiser, crop.localiser, [fold], device=dev
        )
    predictor = Predictor(plan, models, device=dev, tta=tta, localisers=localisers)
    ds = load_dataset_json(raw)
    cases = {c.case_id: c for c in list_cases(raw, ds)}
    out = layout.validation_dir(config, fold)
    out.mkdir(parents=True, exist_ok=True)
    labels = sorted(v for v in plan.labels.values() if v != 0)
    per_case: dict[str, Any] = {}
    step = f"validate {config} fold {fold}"
    for case_id in progress_bar(val_ids, desc=step, unit="case", disable=not progress):
        with failure_context(step, case_id):
            case = cases[case_id]
            image, geometry, _ = read_case(case.images)
            seg, probs, _ = predictor.predict(image, geometry)
            write_image(out / f"{case_id}{ds.file_ending}", seg, geometry)
            with atomic_path(out / f"{case_id}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, probabilities=probs.astype(np.float16))
            ref = read_image(case.label)
            # sparse annotation: only labelled voxels count
            seg_l, ref_l = mask_unlabelled(seg, ref.array, getattr(plan, "ignore_label", None))
            metrics = compute_metrics(seg_l, ref_l, ref.geometry.spacing_zyx, labels)
        per_case[case_id] = {str(k): v for k, v in metrics.items()}
    mean_dice = {
        str(lab): float(np.nanmean([per_case[c][str(lab)]["dice"] for c in per_case]))
        for lab in labels
    }
    summary = {"config": config, "fold": fold, "mean_dice": mean_dice, "cases": per_case}
    write_json_atomic(layout.validation_metrics(config, fold), json_safe(summary))
    return summary
