"""plan-and-train --time-budget: the whole run's wall clock, fingerprint to find-best."""

from __future__ import annotations

import pytest

from autoseg import pipeline


def test_planning_budget_leaves_room_for_planning_preprocessing_and_find_best():
    b = pipeline.planning_budget(1500.0, elapsed_s=2.0)
    reserve = pipeline.OVERHEAD_S + pipeline.OVERHEAD_FRACTION * 1500.0
    assert b == pytest.approx(1500.0 - 2.0 - reserve)
    assert pipeline.planning_budget(60.0, elapsed_s=100.0) == pytest.approx(6.0)  # a tenth


def test_fold_epoch_budget_shrinks_only_when_the_deadline_needs_it():
    # on time: every remaining fold gets its plan
    assert pipeline.fold_epoch_budget(100.0, 1000.0, 400.0, 100.0) == 100.0
    # 400 s left, 100 s of them for start-ups and validations: the remaining 400 s of epoch
    # loops get 300 s, this fold its quarter of that
    assert pipeline.fold_epoch_budget(100.0, 400.0, 400.0, 100.0) == pytest.approx(75.0)
    assert pipeline.fold_epoch_budget(100.0, 50.0, 400.0, 100.0) == 0.0  # past the deadline
    assert pipeline.fold_epoch_budget(100.0, 10.0, 0.0, 0.0) == 100.0  # nothing planned
