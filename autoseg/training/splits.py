"""Cross-validation splits, written once to ``splits.json`` and reused by every configuration.

Two rules from the source studies:

- **grouped by subject**: all images of one subject fall in the same fold (the median-nerve
  ultrasound set has 151 frames of 53 subjects; frames of one wrist are near-duplicates, and a
  split that separates them inflates the validation Dice);
- **stratified by cohort** when ``dataset.json`` names cohorts (volunteers vs patients in the
  sciatic MRN study), so that every fold sees both kinds of scan.

scikit-learn does the splitting: ``StratifiedGroupKFold`` with cohorts, ``GroupKFold`` without.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from autoseg.errors import AutosegError
from autoseg.io.atomic import write_json_atomic

DEFAULT_FOLDS = 5
DEFAULT_SEED = 12345


def make_splits(
    case_ids: Sequence[str],
    subjects: Sequence[str] | None = None,
    cohorts: Sequence[str | None] | None = None,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, list[str]]]:
    """Return ``n_folds`` dicts ``{"train": [...], "val": [...]}`` of sorted case ids.

    Subjects default to the case ids (every case its own subject). Cohorts are used for
    stratification only when there are at least two and every cohort has at least
    ``n_folds`` subjects; otherwise stratifying would be impossible and is skipped.
    """
    ids = list(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    groups = list(subjects) if subjects is not None else ids
    n_subjects = len(set(groups))
    if n_folds < 2:
        raise AutosegError(f"{n_folds} folds cannot cross-validate", fix="use --n-folds 2 or more")
    if n_subjects < n_folds:
        raise AutosegError(
            f"{n_subjects} subjects cannot fill {n_folds} folds (all images of a subject stay "
            "in one fold)",
            fix=f"use --n-folds {max(2, n_subjects)} or fewer, or add subjects",
        )
    x = np.zeros(len(ids))
    strata = _usable_strata(groups, cohorts, n_folds)
    if strata is not None:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(x, strata, groups)
    else:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(x, groups=groups)
    out = []
    for train_idx, val_idx in folds:
        out.append(
            {
                "train": sorted(ids[i] for i in train_idx),
                "val": sorted(ids[i] for i in val_idx),
            }
        )
    return out


def _usable_strata(
    groups: Sequence[str], cohorts: Sequence[str | None] | None, n_folds: int
) -> list[str] | None:
    if cohorts is None or all(c is None for c in cohorts):
        return None
    labels = ["unknown" if c is None else str(c) for c in cohorts]
    subjects_per_cohort: dict[str, set[str]] = {}
    for g, c in zip(groups, labels):
        subjects_per_cohort.setdefault(c, set()).add(g)
    if len(subjects_per_cohort) < 2:
        return None
    if min(len(s) for s in subjects_per_cohort.values()) < n_folds:
        return None
    return labels


def load_or_create_splits(
    path: str | os.PathLike,
    case_ids: Sequence[str],
    subjects: Sequence[str] | None = None,
    cohorts: Sequence[str | None] | None = None,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, list[str]]]:
    """Read ``splits.json`` if it exists (and still matches the cases), else create it.

    Written once so that every configuration, and every rerun, validates on the same folds —
    the precondition for comparing configurations and ensembling their out-of-fold results.
    """
    path = Path(path)
    if path.is_file():
        splits = json.loads(path.read_text(encoding="utf-8"))
        in_splits = {c for fold in splits for c in fold["val"]}
        if in_splits != set(case_ids):
            raise AutosegError(
                "splits.json does not cover the dataset's cases (cases were added or removed)",
                path=path,
                fix="delete splits.json to create new folds (trained folds then no longer match)",
            )
        return splits
    splits = make_splits(case_ids, subjects, cohorts, n_folds, seed)
    write_json_atomic(path, splits)
    return splits
