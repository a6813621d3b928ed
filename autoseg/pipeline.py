"""``autoseg plan-and-train``: every stage from a converted dataset to a chosen model.

plan (fingerprint first if needed) -> preprocess -> train all folds of every planned
configuration -> find-best. Each stage skips what is already done, so rerunning the same
command after an interruption (Ctrl-C, a crash, a reboot) continues where it stopped:
finished folds are skipped and an interrupted fold resumes from its last epoch.

With ``--time-budget`` the budget is the whole run's wall clock, fingerprint to find-best: the
planner gets what is left after the fingerprint less a reserve for its own step timing,
preprocessing and find-best (:func:`planning_budget`), and each fold's epoch loop is held to
what the deadline still allows (:func:`fold_epoch_budget`), so a slow preprocessing or a busy
machine shortens the folds instead of overrunning the budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError


@dataclass
class PipelineResult:
    dataset: str
    plan_path: Path
    trained: dict[str, list[Path]]
    inference: dict[str, Any]


def training_order(plan: Any, configs: Sequence[str]) -> list[str]:
    """Configurations in the order they can be trained: a crop configuration's localiser
    first, because the crop is validated with the localiser's out-of-fold prediction."""
    order: list[str] = []
    for name in configs:
        crop = plan.configurations[name].crop
        if crop is not None and crop.localiser not in order:
            order.append(crop.localiser)
        if name not in order:
            order.append(name)
    return order


# Share of a fold's time left for the epoch loop when the plan has no per-configuration
# schedule (plans made before --time-budget existed): the rest covers validation and start-up.
EPOCH_LOOP_SHARE = 0.85


def epoch_loop_budget(plan: Any, config: str, n_configs: int, n_folds: int) -> float | None:
    """Seconds the epoch loop of one fold of ``config`` may take, from the plan's time budget:
    the configuration's own ``schedule.train_budget_s`` (time-budget plans), else an even
    share of ``schedule.time_budget_s``; None without a budget."""
    cfg = plan.configurations[config]
    explicit = getattr(cfg, "schedule", None)
    if explicit is not None and getattr(explicit, "train_budget_s", None):
        return float(explicit.train_budget_s)
    total = plan.schedule.time_budget_s
    if not total:
        return None
    return EPOCH_LOOP_SHARE * float(total) / (n_configs * n_folds)


# A --time-budget run's time besides the folds, which the planner budgets itself: its timing
# of candidate steps, preprocessing and find-best. usgra-seg at 25 min on one core (204
# frames): fingerprint 2 s, planning 20-40 s, preprocessing 5-10 s, find-best 5-15 s.
OVERHEAD_S = 30.0
OVERHEAD_FRACTION = 0.03


def planning_budget(time_budget_s: float, elapsed_s: float) -> float:
    """What the planner may spend on folds: the budget less what the run has used so far
    (the fingerprint) and the reserve for planning, preprocessing and find-best
    (:data:`OVERHEAD_S` + :data:`OVERHEAD_FRACTION` of the budget); at least a tenth."""
    reserve = OVERHEAD_S + OVERHEAD_FRACTION * time_budget_s
    return max(0.1 * time_budget_s, time_budget_s - elapsed_s - reserve)


def fold_epoch_budget(
    planned_s: float, left_s: float, remaining_planned_s: float, remaining_other_s: float
) -> float:
    """The epoch loop of the next fold: its planned time, scaled down when the deadline no
    longer holds every remaining fold as planned. ``left_s`` is the time to the deadline less
    find-best's reserve, ``remaining_planned_s`` the planned epoch loops of the remaining
    folds (this one included), ``remaining_other_s`` their start-up and validation."""
    available = left_s - remaining_other_s
    if remaining_planned_s <= 0 or available >= remaining_planned_s:
        return planned_s
    return max(0.0, planned_s * available / remaining_planned_s)


def plan_and_train(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    configs: Sequence[str] | None = None,
    folds: str | Sequence[int] | None = None,
    n_folds: int = 5,
    time_budget_s: float | None = None,
    gpu_memory_gb: float | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    progress: bool = True,
    trainer: str | None = None,
    scale_views: bool = True,
) -> PipelineResult:
    """Run every stage; returns where the plan, the folds and the chosen model are.

    ``folds`` None trains the plan's folds: every fold, or only fold 0 when a short time
    budget planned one model on one training split (``schedule.folds``). ``num_workers``
    None: :func:`autoseg.data.loader.default_loader_workers` for the device. ``trainer`` names
    a registered trainer for every configuration (written into the plan; a new plan's time
    budget times that trainer's step); None keeps the plan's. ``scale_views``: find-best's
    scale-view trial (stopped at the time budget's deadline)."""
    from autoseg.choices import parse_folds
    from autoseg.evaluation.find_best import find_best
    from autoseg.evaluation.validation import validate_fold
    from autoseg.paths import preprocessed_dir, resolve_dataset, results_dir
    from autoseg.planning.plan import load_plan
    from autoseg.planning.planner import run_plan
    from autoseg.preprocessing.preprocess import preprocess_dataset
    from autoseg.training.run import (
        fold_is_done,
        options_from_plan,
        select_trainer,
        train,
    )
    from autoseg.training.timing import trainer_step_measure

    started = time.monotonic()
    if trainer is not None:
        from autoseg.training.trainer import TRAINERS

        TRAINERS.get(trainer)  # an unknown name fails before anything runs
    raw = resolve_dataset(dataset, root)
    plan_path = preprocessed_dir(root) / raw.name / "plans.json"
    if not plan_path.is_file():
        budget = time_budget_s
        if time_budget_s is not None:
            from autoseg.planning.planner import ensure_fingerprint

            ensure_fingerprint(raw, root, progress=progress)
            budget = planning_budget(time_budget_s, time.monotonic() - started)
        run_plan(
            raw,
            root,
            gpu_memory_gb=gpu_memory_gb,
            configs=configs,
            time_budget_s=budget,
            progress=progress,
            step_measure=None if budget is None else trainer_step_measure(trainer or "default"),
        )
    if trainer is not None:
        select_trainer(plan_path, trainer, configs, results_dir(root) / raw.name)
    plan = load_plan(plan_path)
    names = list(configs) if configs else list(plan.configurations)
    missing = [c for c in names if c not in plan.configurations]
    if missing:
        raise AutosegError(
            f"configuration {missing[0]!r} is not in the plan ({', '.join(plan.configurations)})",
            path=plan_path,
            fix="re-plan with --overwrite, or choose planned configurations",
        )
    order = training_order(plan, names)
    if folds is None:
        folds = "all" if plan.schedule.folds is None else ",".join(map(str, plan.schedule.folds))
        n_folds_trained = n_folds if plan.schedule.folds is None else len(plan.schedule.folds)
    else:
        n_folds_trained = n_folds
    preprocess_dataset(raw, root, configs=order, progress=progress)
    if num_workers is None:
        from autoseg.data.loader import default_loader_workers
        from autoseg.networks.device import pick_device

        num_workers = default_loader_workers(pick_device(device).type)
    which = "all folds" if folds == "all" else f"fold {folds}"
    fold_ids = parse_folds(folds, n_folds)
    results = results_dir(root) / raw.name
    planned = {c: epoch_loop_budget(plan, c, len(order), n_folds_trained) for c in order}
    fold_s = plan.schedule.fold_budget_s
    todo = [(c, f) for c in order for f in fold_ids if not fold_is_done(results, c, f)]
    deadline = None if time_budget_s is None else started + float(time_budget_s)
    trained: dict[str, list[Path]] = {c: [] for c in order}
    for i, config in enumerate(order, 1):
        if progress:
            print(f"[{i}/{len(order)}] training {config} ({which})", flush=True)
        for fold in fold_ids:
            options = options_from_plan(plan, config=config, device=device, num_workers=num_workers)
            options.time_budget_s = planned[config]
            if deadline is not None and (config, fold) in todo and planned[config]:
                rest = todo[todo.index((config, fold)) :]
                reserve = OVERHEAD_FRACTION * float(time_budget_s)
                options.time_budget_s = fold_epoch_budget(
                    planned[config],
                    deadline - time.monotonic() - reserve,
                    sum(planned[c] or 0.0 for c, _ in rest),
                    sum(max(0.0, (fold_s or 0.0) - (planned[c] or 0.0)) for c, _ in rest),
                )
            trained[config] += train(
                raw,
                config,
                [fold],
                root,
                options=options,
                resume=True,
                n_folds=n_folds,
                progress=progress,
                validate=validate_fold,
            )
    fold_list = parse_folds(folds)  # "all": None, every trained fold
    inference = find_best(
        raw,
        root,
        configs=order,
        folds=fold_list,
        progress=progress,
        deadline=deadline,
        device=device,
        scale_views=scale_views,
    )
    return PipelineResult(raw.name, plan_path, trained, inference)
