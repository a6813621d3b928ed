from __future__ import annotations

import pytest

from autoseg.errors import AutosegError
from autoseg.training.splits import load_or_create_splits, make_splits


def _cases(n_subjects=20, per_subject=3):
    ids, subjects, cohorts = [], [], []
    for s in range(n_subjects):
        for k in range(per_subject):
            ids.append(f"s{s:02d}_{k}")
            subjects.append(f"s{s:02d}")
            cohorts.append("patient" if s % 3 == 0 else "volunteer")
    return ids, subjects, cohorts


def test_folds_partition_the_cases_and_keep_subjects_together():
    ids, subjects, cohorts = _cases()
    folds = make_splits(ids, subjects, cohorts, n_folds=5)
    assert len(folds) == 5
    all_val = [c for f in folds for c in f["val"]]
    assert sorted(all_val) == sorted(ids)  # every case validated exactly once
    subject_of = dict(zip(ids, subjects))
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        train_subjects = {subject_of[c] for c in f["train"]}
        val_subjects = {subject_of[c] for c in f["val"]}
        assert not train_subjects & val_subjects


def test_cohorts_are_spread_over_folds():
    ids, subjects, cohorts = _cases(n_subjects=25)
    cohort_of = dict(zip(ids, cohorts))
    for f in make_splits(ids, subjects, cohorts, n_folds=5):
        assert {cohort_of[c] for c in f["val"]} == {"patient", "volunteer"}


def test_deterministic_and_seed_dependent():
    ids, subjects, _ = _cases()
    assert make_splits(ids, subjects, seed=1) == make_splits(ids, subjects, seed=1)
    assert make_splits(ids, subjects, seed=1) != make_splits(ids, subjects, seed=2)


def test_too_few_subjects_is_a_clear_error():
    with pytest.raises(AutosegError, match="--n-folds 3"):
        make_splits(["a", "b", "c"], n_folds=5)


def test_splits_json_written_once_and_checked(tmp_path):
    ids, subjects, cohorts = _cases(n_subjects=10, per_subject=1)
    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, ids, subjects, cohorts)
    again = load_or_create_splits(path, ids, subjects, cohorts, seed=999)
    assert first == again  # the file wins over a new seed
    with pytest.raises(AutosegError, match="does not cover"):
        load_or_create_splits(path, ids[:-1])
