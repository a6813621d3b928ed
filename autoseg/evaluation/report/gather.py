"""What the report reads: the plan, every fold's state and curves, find-best's choice, and which
predictions stand for the model (:class:`Source`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.evaluation.report import assets
from autoseg.evaluation.report.constants import (
    INFERENCE_FILE,
    SPLITS_FILE,
)
from autoseg.io import Case, DatasetJson, list_cases, load_dataset_json
from autoseg.layout import ResultsLayout
from autoseg.paths import parse_dataset_folder, preprocessed_dir, resolve_dataset, results_dir


@dataclass
class FoldStatus:
    """One fold of one configuration, as training left it."""

    config: str
    fold: int
    folder: Path
    state: str  # validated | trained, not validated | running or interrupted | not started ...
    log: list[dict[str, Any]] = field(default_factory=list)
    curves: bytes | None = None
    curves_note: str = ""
    epochs_planned: int | None = None
    validation: dict[str, Any] | None = None  # validation/metrics.json
    finished_at: float | None = None  # mtime of checkpoint_final.pt
    problems: list[str] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.log)

    @property
    def seconds(self) -> float | None:
        times = [e.get("epoch_seconds") for e in self.log]
        return float(sum(t for t in times if t is not None)) if self.log else None

    @property
    def final_pseudo_dice(self) -> float | None:
        return self.log[-1].get("pseudo_dice_ema") if self.log else None

    @property
    def best_pseudo_dice(self) -> float | None:
        values = [e.get("pseudo_dice_ema") for e in self.log if e.get("pseudo_dice_ema")]
        return max(values) if values else None

    def validation_cases(self) -> dict[str, dict[str, Any]]:
        return dict((self.validation or {}).get("cases", {}))


@dataclass
class ReportData:
    """Everything the report reads from disk, with a note for whatever could not be read."""

    raw: Path
    res: Path
    ds: DatasetJson
    cases: list[Case]
    labels: dict[int, str]  # foreground value -> name
    cohorts: dict[str, str]
    plan: Any | None  # autoseg.planning.plan.Plan
    plan_path: Path
    plan_problem: str | None
    splits: list[dict[str, list[str]]] | None
    splits_problem: str | None
    inference: dict[str, Any] | None
    inference_problem: str | None
    configs: list[str]
    folds: dict[str, list[FoldStatus]]

    @property
    def n_folds(self) -> int:
        if self.splits is not None:
            return len(self.splits)
        found = [f.fold for fs in self.folds.values() for f in fs if f.state != "not started"]
        return max(found) + 1 if found else 0

    @property
    def dataset_ref(self) -> str:
        """What a user types to name the dataset: its id when the folder has one."""
        parsed = parse_dataset_folder(self.raw.name)
        return str(parsed[0]) if parsed else str(self.raw)

    @property
    def primary_label(self) -> int:
        """The label measured in figures: the first whose name says nerve, else the lowest."""
        for value, name in sorted(self.labels.items()):
            if "nerve" in name.lower():
                return value
        return min(self.labels) if self.labels else 1


def _read_json(path: Path) -> tuple[Any, str | None]:
    if not path.is_file():
        return None, f"{path} does not exist"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} cannot be read ({exc})"


def _read_png(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if assets.is_png(data) else None


def planned_epochs(plan: Any, config: str) -> int | None:
    if plan is None:
        return None
    cfg = plan.configurations.get(config)
    schedule = getattr(cfg, "schedule", None) or plan.schedule
    return int(schedule.epochs)


def read_fold(res: Path, config: str, fold: int, plan: Any) -> FoldStatus:
    """State, log, curve and validation metrics of one fold."""
    layout = ResultsLayout(res)
    folder = layout.fold_dir(config, fold)
    final = layout.checkpoint(config, fold)
    metrics_path = layout.validation_metrics(config, fold)
    if metrics_path.is_file():
        state = "validated" if final.is_file() else "validated (checkpoint_final.pt deleted)"
    elif final.is_file():
        state = "trained, not validated"
    elif (
        layout.checkpoint(config, fold, "latest").is_file()
        or layout.training_log(config, fold).is_file()
    ):
        state = "running or interrupted"
    elif any((folder / "validation").glob("*.npz")):
        state = "validation outputs only"
    else:
        state = "not started"
    status = FoldStatus(config, fold, folder, state, epochs_planned=planned_epochs(plan, config))
    if final.is_file():
        status.finished_at = final.stat().st_mtime
    log, problem = _read_json(layout.training_log(config, fold))
    if isinstance(log, list):
        status.log = [e for e in log if isinstance(e, dict)]
        refitted = [e["epochs_refitted"] for e in status.log if e.get("epochs_refitted")]
        if refitted:  # the time-budget rule changed the number of epochs after epoch 1
            status.epochs_planned = int(refitted[-1])
    elif state != "not started":
        status.problems.append(problem or "training_log.json is not a list of epochs")
    curve_path = folder / "training_curves.png"
    status.curves = _read_png(curve_path)
    if status.curves is None and status.log:
        status.curves = assets.plot_training_log(status.log, f"{config} fold {fold}")
        status.curves_note = "re-plotted from training_log.json (training_curves.png missing)"
    if metrics_path.is_file():
        validation, problem = _read_json(metrics_path)
        if isinstance(validation, dict):
            status.validation = validation
        else:
            status.problems.append(problem or "validation/metrics.json is not an object")
    return status


def _config_folders(res: Path) -> list[str]:
    if not res.is_dir():
        return []
    return sorted(p.name for p in res.iterdir() if p.is_dir() and any(p.glob("fold_*")))


def gather(dataset: str | int | os.PathLike, root: str | os.PathLike | None = None) -> ReportData:
    """Read the dataset, plan, splits, inference.json and every fold's files."""
    raw = resolve_dataset(dataset, root)
    ds = load_dataset_json(raw)
    res = results_dir(root) / raw.name
    cases = list_cases(raw, ds)
    labels = {v: k for k, v in sorted(ds.foreground_labels.items(), key=lambda kv: kv[1])}
    cohorts = {c.case_id: ds.cohort_of(c.case_id) for c in cases if ds.cohort_of(c.case_id)}

    plan_path = preprocessed_dir(root) / raw.name / "plans.json"
    plan, plan_problem = None, None
    if plan_path.is_file():
        from autoseg.planning.plan import load_plan

        try:
            plan = load_plan(plan_path)
        except AutosegError as exc:
            plan_problem = str(exc)
    else:
        plan_problem = f"no plan at {plan_path}"

    splits, splits_problem = _read_json(res / SPLITS_FILE)
    if splits is not None and not (
        isinstance(splits, list) and all(isinstance(s, dict) and "val" in s for s in splits)
    ):
        splits, splits_problem = None, f"{res / SPLITS_FILE} is not a list of {{train, val}}"
    inference, inference_problem = _read_json(res / INFERENCE_FILE)
    if inference is not None and not (
        isinstance(inference, dict) and "configurations" in inference
    ):
        inference, inference_problem = None, f"{res / INFERENCE_FILE} has no configurations"

    configs = list(plan.configurations) if plan is not None else []
    configs += [c for c in _config_folders(res) if c not in configs]
    n_folds = len(splits) if splits else 0
    for c in configs:
        for d in (res / c).glob("fold_*"):
            if d.name[5:].isdigit():
                n_folds = max(n_folds, int(d.name[5:]) + 1)
    folds = {c: [read_fold(res, c, k, plan) for k in range(n_folds)] for c in configs}
    return ReportData(
        raw=raw,
        res=res,
        ds=ds,
        cases=cases,
        labels=labels,
        cohorts=cohorts,
        plan=plan,
        plan_path=plan_path,
        plan_problem=plan_problem,
        splits=splits,
        splits_problem=splits_problem,
        inference=inference,
        inference_problem=inference_problem,
        configs=configs,
        folds=folds,
    )


# --------------------------------------------------------------------------------------------
# Which out-of-fold predictions the per-case sections show


@dataclass
class Source:
    """The model whose out-of-fold predictions sections 5-8 evaluate."""

    name: str
    configs: list[str]
    case_fold: dict[str, int]
    postprocessing: dict[int, dict[str, Any]]
    how: str  # one sentence: where this choice comes from
    notes: list[str] = field(default_factory=list)


def fold_mean_dice(status: FoldStatus, labels: Sequence[int]) -> list[float]:
    """Per validation case: mean Dice over labels, from the fold's metrics.json."""
    out = []
    for per_label in status.validation_cases().values():
        values = [(per_label.get(str(lab)) or {}).get("dice") for lab in labels]
        values = [v for v in values if v is not None]
        if values:
            out.append(float(np.mean(values)))
    return out


def mean_metric(per_case: Sequence[Mapping[str, Any]], key: str, labels: Sequence[int]) -> float:
    """Mean of one metric over metrics.json case entries and labels (missing values skipped)."""
    values = [(pc.get(str(lab)) or {}).get(key) for pc in per_case for lab in labels]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else math.nan


def choose_source(data: ReportData) -> Source | None:
    """inference.json's choice; without it, the configuration with the best mean Dice over
    the folds validated so far; None when no fold is validated."""
    labels = sorted(data.labels)
    if data.inference is not None:
        info = data.inference
        configs = [str(c) for c in info.get("configurations", [])]
        folds = [int(f) for f in info.get("folds", range(data.n_folds))]
        case_fold: dict[str, int] = {}
        for f in folds:
            if data.splits is not None and f < len(data.splits):
                val = data.splits[f]["val"]
            elif configs and f < len(data.folds.get(configs[0], [])):
                val = list(data.folds[configs[0]][f].validation_cases())
            else:
                val = []
            case_fold.update(dict.fromkeys(val, f))
        rules = {
            int(k): dict(v)
            for k, v in info.get("postprocessing", {}).items()
            if isinstance(v, Mapping)
        }
        ensemble = " (ensemble: probabilities averaged, then argmax)" if len(configs) > 1 else ""
        return Source(
            name=str(info.get("chosen", "+".join(configs))),
            configs=configs,
            case_fold=dict(sorted(case_fold.items())),
            postprocessing=rules,
            how=f"the model chosen by find-best in inference.json{ensemble}",
        )
    best: tuple[float, str] | None = None
    for config, statuses in data.folds.items():
        scores = [d for s in statuses if s.validation for d in fold_mean_dice(s, labels)]
        if scores and (best is None or float(np.mean(scores)) > best[0]):
            best = (float(np.mean(scores)), config)
    if best is None:
        return None
    config = best[1]
    validated = [s for s in data.folds[config] if s.validation]
    case_fold = {c: s.fold for s in validated for c in s.validation_cases()}
    notes = []
    absent = [s.fold for s in data.folds[config] if not s.validation]
    if absent:
        notes.append(
            f"folds {', '.join(map(str, absent))} of {config} are not validated yet: their "
            "cases are missing below"
        )
    return Source(
        name=config,
        configs=[config],
        case_fold=dict(sorted(case_fold.items())),
        postprocessing={},
        how=f"{config}, the configuration with the highest mean Dice over the folds validated "
        "so far (no inference.json yet: run autoseg find-best to choose a model and its "
        "post-processing)",
        notes=notes,
    )
