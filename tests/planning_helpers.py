"""Shared by the time-budget planning tests: a fake step timer and the plan invariants."""

from __future__ import annotations

import math

import pytest

from autoseg.networks import ArchitectureConfig
from autoseg.planning import budget as bd
from autoseg.planning import plan_from_dict
from autoseg.planning.patch import MIN_BATCH


def fake_timer(ns_per_activation: float = 10.0, overhead_s: float = 0.005):
    """A device whose step time is a fixed overhead plus a cost per conv-output element (how
    a CPU behaves, documentation/planning.md); counts its calls."""

    def timer(arch, patch, batch):
        timer.calls += 1
        return overhead_s + ns_per_activation * 1e-9 * bd.activation_count(arch, patch, batch)

    timer.calls = 0
    return timer


def check_budget_plan(plan, budget_s, timer):
    """Every configuration x 5 folds fits the budget; valid plan; recorded fields."""
    assert plan.schedule.source == "time_budget" and plan.schedule.time_budget_s == budget_s
    n = len(plan.configurations)
    n_folds = bd.N_FOLDS if plan.schedule.folds is None else len(plan.schedule.folds)
    assert plan.schedule.folds in (None, [0])
    fold_s = budget_s / (n * n_folds)
    assert plan.schedule.fold_budget_s == pytest.approx(fold_s, rel=1e-3, abs=0.05)
    assert plan_from_dict(plan.to_dict()) == plan
    total = 0.0
    n_val = math.ceil(plan.fingerprint.n_cases / bd.N_FOLDS)
    for name, c in plan.configurations.items():
        assert c.batch_size >= MIN_BATCH
        arch = ArchitectureConfig.from_dict(c.architecture)
        assert all(p % d == 0 for p, d in zip(c.patch_size, arch.required_divisor())), name
        step = timer(c.architecture, tuple(c.patch_size), c.batch_size)
        assert c.measured_step_s == pytest.approx(step, rel=1e-3, abs=1e-5)
        s = c.schedule
        enough = bd.MIN_ITERATIONS if "time_budget_warning" not in plan.why else 1
        assert s.epochs * s.iterations_per_epoch >= enough
        if c.crop is not None:
            assert c.crop.localiser in plan.configurations
        loader = bd.loader_seconds(plan.device.type, c.batch_size, c.patch_size, arch.in_channels)
        iteration = bd.iteration_seconds(step, loader, plan.device.type)
        epoch = s.iterations_per_epoch * iteration + bd.VAL_BATCHES_PER_EPOCH * 0.3 * step
        epoch += bd.EPOCH_OVERHEAD_S
        assert s.epochs * epoch <= s.train_budget_s + 0.1
        reserve = bd.reserve_seconds(fold_s, plan.device.type)
        assert s.train_budget_s <= fold_s - reserve + 0.1
        slices = 1 if c.slice_axis is None else None
        if slices is not None and c.crop is None:
            context = bd.FoldContext(plan.device.type, n_val, tuple(c.median_shape))
            validation = context.validation_seconds(step, c.batch_size, c.patch_size)
            assert s.train_budget_s + validation <= fold_s - reserve + 0.1
        total += n_folds * s.epochs * epoch
    assert total <= budget_s
    return plan
