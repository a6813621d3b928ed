"""``autoseg report DATASET``: one self-contained HTML page about a trained dataset.

``<root>/results/<ds>/report.html`` holds, in order: the dataset and how to reproduce it, the
plan in plain words, the training curves of every fold, the cross-validation table with the
chosen model, per-case metrics of the chosen model's out-of-fold predictions (sortable), the
worst cases as overlay figures, nerve measurements of prediction vs reference, and a cohort
summary. Images are embedded as base64 PNG; the page needs no network and no JavaScript
library (a dozen lines of plain JavaScript sort the tables). documentation/report.md says
where every number comes from.

Everything is read from the files training, find-best and planning wrote (this module imports
neither :mod:`autoseg.training` nor :mod:`autoseg.inference`). Whatever is not there yet (a
fold still training, no ``inference.json``, a deleted curve) makes its section say so; the
report never fails because a stage has not run.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import json
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.errors import AutosegError
from autoseg.evaluation import report_assets as assets
from autoseg.evaluation.measure import measure_nerve, slice_axis
from autoseg.evaluation.metrics import FAILURE_DICE, compute_metrics, map_cases, read_label_map
from autoseg.evaluation.summary import describe
from autoseg.io import Case, DatasetJson, atomic_path, list_cases, load_dataset_json, read_image
from autoseg.io.image import collapse_grey_rgb
from autoseg.layout import ResultsLayout
from autoseg.networks.registry import NETWORKS
from autoseg.paths import parse_dataset_folder, preprocessed_dir, resolve_dataset, results_dir

REPORT_FILE = "report.html"
INFERENCE_FILE = "inference.json"
SPLITS_FILE = "splits.json"
MAX_WORST = 5
CSA_PLOT_CASES = 3
"""Cases in the CSA-along-the-nerve figure: the worst, the median and the best by Dice, which
shows the range of agreement without a wall of plots."""

SECTIONS = (
    ("overview", "1. Dataset"),
    ("plan", "2. Plan"),
    ("training", "3. Training"),
    ("cross-validation", "4. Cross-validation"),
    ("cases", "5. Per-case metrics"),
    ("worst-cases", "6. Worst cases"),
    ("measurements", "7. Measurements"),
    ("cohorts", "8. Cohorts"),
)
_SECTION_ERRORS = (AutosegError, OSError, ValueError, KeyError, TypeError, IndexError)
_DASH = "–"


# --------------------------------------------------------------------------------------------
# Formatting


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell; None/NaN as a dash."""
    if is_missing(value):
        return _DASH
    if isinstance(value, int | np.integer):
        return str(int(value))
    v = float(value)
    return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"


def size_digits(value: Any) -> int:
    """Decimals for a volume, area or CSA: 0 from 100 up, 1 from 10, else 2 (a median nerve
    in ultrasound is 7-11 mm², a sciatic nerve's volume thousands of mm³)."""
    if is_missing(value):
        return 0
    v = abs(float(value))
    return 0 if v >= 100 else 1 if v >= 10 else 2


def td_size(value: Any) -> str:
    return td_num(value, size_digits(value))


def fmt_dims(values: Sequence[float]) -> str:
    """``24x160x160`` / ``3x0.75x0.75``: integers without decimals, others to 3 significant."""
    return "x".join(f"{v:g}" if float(v).is_integer() else f"{v:.3g}" for v in values)


def fmt_duration(seconds: float | None) -> str:
    if is_missing(seconds):
        return _DASH
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def fmt_time(value: str | float | None) -> str:
    """ISO string or POSIX time -> ``2026-05-01 14:03 UTC``."""
    if value is None:
        return _DASH
    try:
        if isinstance(value, int | float):
            t = _dt.datetime.fromtimestamp(float(value), _dt.UTC)
        else:
            t = _dt.datetime.fromisoformat(str(value))
            if t.tzinfo is None:
                t = t.replace(tzinfo=_dt.UTC)
            t = t.astimezone(_dt.UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def td_num(value: Any, digits: int = 3, cls: str = "n") -> str:
    """A numeric cell whose ``data-v`` holds the raw value for sorting (empty when missing)."""
    raw = "" if is_missing(value) else repr(float(value))
    return f'<td class="{cls}" data-v="{raw}">{fmt(value, digits)}</td>'


def table(
    headers: Sequence[str | tuple[str, bool]],
    rows: Sequence[str],
    *,
    sortable: bool = False,
    cls: str = "",
    table_id: str = "",
) -> str:
    """``rows`` are ready ``<tr>...</tr>`` strings; a header ``(text, True)`` is right-aligned."""
    ths = []
    for h in headers:
        text, right = (h, False) if isinstance(h, str) else h
        ths.append(f'<th class="n">{esc(text)}</th>' if right else f"<th>{esc(text)}</th>")
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' id="{table_id}"' if table_id else "")
    return (
        f'<div class="scroll"><table{attrs}><thead><tr>{"".join(ths)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def kv_table(pairs: Sequence[tuple[str, str]]) -> str:
    """Key-value table; values are HTML already."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def figure(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{assets.data_uri(png)}" alt="{esc(alt)}">{cap}</figure>'


def details(summary: str, items: Sequence[str]) -> str:
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f"<details><summary>{esc(summary)}</summary><ul>{lis}</ul></details>"


# --------------------------------------------------------------------------------------------
# What is on disk


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
    log, problem = _read_json(folder / "training_log.json")
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
    labels = {v: k for k, v in sorted(ds.labels.items(), key=lambda kv: kv[1]) if v != 0}
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


# --------------------------------------------------------------------------------------------
# Per-case work (runs in worker processes)


@dataclass(frozen=True)
class CaseJob:
    case: str
    fold: int
    reference: Path
    image: Path | None
    label_maps: tuple[Path, ...]  # validation/<case><ending>, one per configuration
    probabilities: tuple[Path, ...]  # validation/<case>.npz, one per configuration
    postprocessing: tuple[tuple[int, tuple[tuple[str, Any], ...]], ...]
    labels: tuple[int, ...]


@dataclass
class CaseResult:
    case: str
    fold: int
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    measures: dict[int, dict[str, Any]] = field(default_factory=dict)
    spacing: tuple[float, ...] = ()
    error: str | None = None

    @property
    def mean_dice(self) -> float:
        if self.error or not self.metrics:
            return math.nan
        return float(np.mean([m["dice"] for m in self.metrics.values()]))

    @property
    def failed(self) -> bool:
        return any(m["dice"] < FAILURE_DICE for m in self.metrics.values())


def _load_probabilities(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path) as npz:
            probs = npz["probabilities"]
    except Exception as exc:  # zip/pickle/key errors: a damaged or foreign file
        raise AutosegError(
            f"cannot read out-of-fold probabilities ({type(exc).__name__})", path=path
        ) from exc
    if probs.shape[1:] != shape:
        raise AutosegError(
            f"probabilities have shape {probs.shape}, the reference {shape}", path=path
        )
    return probs


def segment_case(job: CaseJob) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(prediction, reference, spacing) of one case: the configuration's validation label
    map, or for an ensemble the argmax of the mean probabilities; then post-processing."""
    ref, geometry = read_label_map(job.reference)
    spacing = tuple(geometry.spacing_zyx)
    if len(job.label_maps) == 1 and job.label_maps[0].is_file():
        seg, _ = read_label_map(job.label_maps[0])
        if seg.shape != ref.shape:
            raise AutosegError(
                f"prediction shape {seg.shape} != reference shape {ref.shape}",
                path=job.label_maps[0],
            )
    else:
        absent = [p for p in job.probabilities if not p.is_file()]
        if absent:
            raise AutosegError(
                "no out-of-fold prediction",
                path=absent[0],
                fix=f"train and validate fold {job.fold}",
            )
        total: np.ndarray | None = None
        for p in job.probabilities:
            probs = _load_probabilities(p, ref.shape).astype(np.float32)
            total = probs if total is None else total + probs
        seg = np.argmax(total, axis=0).astype(np.uint8)  # ties: the lower class
    from autoseg.postprocessing.rules import apply_postprocessing  # as find-best does

    rules = {str(lab): dict(rule) for lab, rule in job.postprocessing}
    return apply_postprocessing(seg, rules, spacing), ref, spacing


def csa_by_slice(seg: np.ndarray, spacing: Sequence[float], label: int, axis: int):
    """Measurement of one label and its total perpendicular CSA per slice ({slice: mm²})."""
    m = measure_nerve(seg, spacing, label=label, axis=axis if seg.ndim == 3 else None)
    per_slice: dict[int, float] = {}
    for s in m.slices:
        per_slice[s.slice] = per_slice.get(s.slice, 0.0) + s.csa_perpendicular_mm2
    return m, per_slice


def measure_pair(
    ref: np.ndarray, seg: np.ndarray, spacing: Sequence[float], label: int
) -> dict[str, Any]:
    """Volume, mean CSA, length and the CSA profile of reference and prediction, both sliced
    along the reference's axis (so that their profiles share positions)."""
    axis = slice_axis(ref == label, spacing) if ref.ndim == 3 else 0
    out: dict[str, Any] = {"axis": axis, "slice_mm": float(spacing[axis]) if ref.ndim == 3 else 0}
    for key, arr in (("ref", ref), ("pred", seg)):
        m, per_slice = csa_by_slice(arr, spacing, label, axis)
        out[key] = {
            "volume_mm3": m.volume_mm3,
            "csa_mean_mm2": float(np.mean(list(per_slice.values()))) if per_slice else math.nan,
            "length_mm": m.length_mm,
            "n_branches": m.n_branches,
            "profile": per_slice,
        }
    return out


def score_case(job: CaseJob) -> CaseResult:
    """Metrics and measurements of one case; a missing or broken file becomes an error note."""
    try:
        seg, ref, spacing = segment_case(job)
        metrics = compute_metrics(seg, ref, spacing, job.labels)
        measures = {lab: measure_pair(ref, seg, spacing, lab) for lab in job.labels}
    except (AutosegError, OSError, ValueError) as exc:
        return CaseResult(job.case, job.fold, error=str(exc))
    return CaseResult(job.case, job.fold, metrics, measures, spacing)


def case_jobs(data: ReportData, source: Source) -> list[CaseJob]:
    ending = data.ds.file_ending
    images = {c.case_id: c.images[0] if c.images else None for c in data.cases}
    rules = tuple(
        (lab, tuple(sorted(rule.items()))) for lab, rule in sorted(source.postprocessing.items())
    )
    jobs = []
    for case, fold in source.case_fold.items():
        val = [ResultsLayout(data.res).validation_dir(c, fold) for c in source.configs]
        jobs.append(
            CaseJob(
                case=case,
                fold=fold,
                reference=data.raw / "labelsTr" / f"{case}{ending}",
                image=images.get(case),
                label_maps=tuple(v / f"{case}{ending}" for v in val),
                probabilities=tuple(v / f"{case}.npz" for v in val),
                postprocessing=rules,
                labels=tuple(sorted(data.labels)),
            )
        )
    return jobs


# --------------------------------------------------------------------------------------------
# Sections


def versions() -> list[tuple[str, str]]:
    out = [("autoseg", __version__), ("Python", platform.python_version())]
    for dist in ("torch", "numpy", "SimpleITK"):
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    return out


def device_text(plan: Any) -> str:
    if plan is None:
        return _DASH
    d = plan.device
    if d.type == "cuda":
        return f"GPU {d.name or ''} ({d.gpu_memory_gb:g} GB, {d.source})".replace("  ", " ")
    return f"CPU (no GPU seen when planning; memory budget {d.gpu_memory_gb:g} GB, {d.source})"


def reproduce_commands(data: ReportData) -> str:
    ref = data.dataset_ref
    train = f"autoseg plan-and-train {ref}"
    if data.n_folds and data.n_folds != 5:
        train += f" --n-folds {data.n_folds}"
    if data.plan is not None and data.plan.schedule.time_budget_s:
        train += f" --time-budget {int(data.plan.schedule.time_budget_s)}s"
    lines = [
        "# with the same raw dataset and plans.json in place (plan-and-train plans only when",
        "# preprocessed/<dataset>/plans.json is missing, so hand edits are kept)",
        train,
        f"autoseg predict -d {ref} -i INPUT_FOLDER -o OUTPUT_FOLDER",
        f"autoseg report {ref}",
    ]
    return f"<pre>{esc(chr(10).join(lines))}</pre>"


def section_overview(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    ds = data.ds
    scored = [r for r in results if not r.error]
    cards = [("training cases", str(len(data.cases)))]
    if data.inference is not None:
        info = data.inference
        cards.append(("chosen model", str(info.get("chosen", _DASH))))
        cards.append(("CV Dice (post-processed)", fmt(info.get("cv_dice_postprocessed"))))
    elif source is not None:
        cards.append(("best so far (no find-best)", source.name))
    if scored:
        cards.append(
            (f"mean Dice, {len(scored)} cases", fmt(np.mean([r.mean_dice for r in scored])))
        )
        cards.append((f"failures (Dice < {FAILURE_DICE})", str(sum(r.failed for r in scored))))
    card_html = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in cards
    )
    cohort_counts: dict[str, int] = {}
    for c in data.cohorts.values():
        cohort_counts[c] = cohort_counts.get(c, 0) + 1
    finished = [f.finished_at for fs in data.folds.values() for f in fs if f.finished_at]
    dates = [("plan", fmt_time(data.plan.created_at) if data.plan else _DASH)]
    if finished:
        dates.append(
            ("training finished", f"{fmt_time(min(finished))} … {fmt_time(max(finished))}")
        )
    if data.inference is not None:
        dates.append(("find-best", fmt_time(data.inference.get("created_at"))))
    dates.append(("this report", fmt_time(_dt.datetime.now(_dt.UTC).isoformat())))
    pairs = [
        ("dataset", f"<code>{esc(data.raw)}</code>"),
        ("cases", f"{len(data.cases)} labelled training cases"),
        ("labels", esc(", ".join(f"{v} = {n}" for v, n in data.labels.items()))),
        ("channels", esc(", ".join(f"{k}: {v}" for k, v in ds.channel_names.items()))),
    ]
    if cohort_counts:
        pairs.append(
            ("cohorts", esc(", ".join(f"{k} ({n})" for k, n in sorted(cohort_counts.items()))))
        )
    if ds.description:
        pairs.append(("description", esc(ds.description)))
    if ds.reference:
        pairs.append(("reference", esc(ds.reference)))
    pairs.append(("dates", "; ".join(f"{esc(k)} {esc(v)}" for k, v in dates)))
    pairs.append(("software", esc(", ".join(f"{k} {v}" for k, v in versions()))))
    pairs.append(("device", esc(device_text(data.plan))))
    return (
        f'<div class="cards">{card_html}</div>'
        + kv_table(pairs)
        + "<h3>Reproduce</h3>"
        + reproduce_commands(data)
    )


def describe_configuration(name: str, cfg: Any, plan: Any) -> str:
    """One sentence per configuration, e.g. ``3d_fullres: 3D U-Net, 6 stages, patch 24x160x160
    voxels (72x120x120 mm) at 3x0.75x0.75 mm, batch 2, ~2.5 GB GPU memory, 1000 epochs x 250
    iterations``."""
    arch = cfg.architecture
    name = str(arch.get("network"))
    net = NETWORKS.get(name).label if name in NETWORKS else name
    if cfg.dim == 2 and plan.dim == 3 and cfg.slice_axis is not None:
        plane = "-".join(a for i, a in enumerate("zyx") if i != cfg.slice_axis)
        if cfg.context_slices > 1:
            what = (
                f"2D {net} on {plane} slices, {cfg.context_slices} neighbouring slices in, "
                "the centre one predicted"
            )
        else:
            what = f"2D {net} on {plane} slices"
    else:
        what = f"{cfg.dim}D {net}"
    patch_mm = [p * s for p, s in zip(cfg.patch_size, cfg.spacing)]
    schedule = getattr(cfg, "schedule", None) or plan.schedule
    parts = [
        what,
        f"{cfg.n_stages} stages",
        f"patch {fmt_dims(cfg.patch_size)} voxels ({fmt_dims(patch_mm)} mm) at "
        f"{fmt_dims(cfg.spacing)} mm",
        f"batch {cfg.batch_size}",
    ]
    if cfg.crop is not None:
        parts.append(
            f"window {fmt_dims(cfg.crop.window_voxels)} voxels ({fmt_dims(cfg.crop.window_mm)} "
            f"mm) around the structure found by {cfg.crop.localiser}"
        )
    if cfg.parameters:
        parts.append(f"{cfg.parameters / 1e6:.1f} M parameters")
    parts.append(f"~{cfg.estimated_memory_gb:.2g} GB GPU memory")
    length = f"{schedule.epochs} epochs x {schedule.iterations_per_epoch} iterations"
    budget = getattr(schedule, "train_budget_s", None)
    if budget:  # a configuration schedule fitted to --time-budget
        length += f" (fitted to {fmt_duration(budget)} of training per fold)"
    parts.append(length)
    return f"{name}: " + ", ".join(parts)


def section_plan(data: ReportData) -> str:
    plan = data.plan
    if plan is None:
        return missing(
            f"No plan: {data.plan_problem}. Run autoseg plan {data.dataset_ref} "
            "(plan-and-train does it first)."
        )
    fp = plan.fingerprint
    norm = ", ".join(
        f"{plan.channel_names.get(k, k)}: {n.scheme}" for k, n in plan.normalization.items()
    )
    intro = (
        f"{fp.dim}D data, {fp.n_cases} cases, median spacing {fmt_dims(fp.spacing_median)} mm "
        f"(anisotropy {fp.anisotropy_ratio:.3g}), median foreground "
        f"{100 * fp.foreground_fraction_median:.2g} % of the voxels. Target spacing "
        f"{fmt_dims(plan.target_spacing)} mm; normalisation {norm}. Planned by "
        f"{plan.created_by} on {fmt_time(plan.created_at)}."
    )
    items = []
    for name, cfg in plan.configurations.items():
        why = [f"{k}: {v}" for k, v in cfg.why.items()]
        items.append(
            f"<li><b>{esc(describe_configuration(name, cfg, plan))}</b>"
            + (details(f"why ({len(why)} decisions)", why) if why else "")
            + "</li>"
        )
    plan_why = [f"{k}: {v}" for k, v in plan.why.items()]
    return (
        f"<p>{esc(intro)}</p><ul>{''.join(items)}</ul>"
        + (details("why: plan-wide decisions", plan_why) if plan_why else "")
        + f'<p class="note">Source: <code>{esc(data.plan_path)}</code></p>'
    )


def section_training(data: ReportData) -> str:
    if not data.configs:
        return missing(
            f"No configuration has been trained yet (nothing under {data.res}). Run "
            f"autoseg plan-and-train {data.dataset_ref}."
        )
    labels = sorted(data.labels)
    out = []
    for config in data.configs:
        statuses = data.folds.get(config, [])
        rows, figs = [], []
        for s in statuses:
            val = fold_mean_dice(s, labels) if s.validation else []
            epochs = f"{s.epochs_run}" + (f" / {s.epochs_planned}" if s.epochs_planned else "")
            problems = "; ".join(s.problems)
            rows.append(
                "<tr>"
                f"<td>{s.fold}</td><td>{esc(s.state)}</td>"
                f'<td class="n">{esc(epochs)}</td>'
                f'<td class="n">{esc(fmt_duration(s.seconds))}</td>'
                + td_num(s.final_pseudo_dice)
                + td_num(s.best_pseudo_dice)
                + td_num(float(np.mean(val)) if val else None)
                + f'<td class="n">{len(val) if val else _DASH}</td>'
                f"<td>{esc(problems)}</td></tr>"
            )
            if s.curves is not None:
                caption = f"{config} fold {s.fold}" + (
                    f": {s.curves_note}" if s.curves_note else ""
                )
                figs.append(figure(s.curves, f"training curves {config} fold {s.fold}", caption))
            elif s.state != "not started":
                figs.append(missing(f"{config} fold {s.fold}: no training curve or log"))
        headers = [
            "fold",
            "state",
            ("epochs", True),
            ("time", True),
            ("final pseudo-Dice (EMA)", True),
            ("best pseudo-Dice (EMA)", True),
            ("validation Dice", True),
            ("val. cases", True),
            "problems",
        ]
        done = sum(s.state.startswith("validated") for s in statuses)
        out.append(
            f"<h3>{esc(config)} <span class='note'>({done} of {len(statuses)} folds "
            f"validated)</span></h3>"
            + table(headers, rows)
            + (f'<div class="grid">{"".join(figs)}</div>' if figs else "")
        )
    return (
        '<p class="note">Pseudo-Dice: Dice of validation patches during training (EMA: '
        "exponential moving average, what checkpoint_best follows). Validation Dice: mean over "
        "the fold's validation cases and labels of the full-image prediction at the end of the "
        "fold (validation/metrics.json). Time: sum of the epochs' wall time.</p>" + "".join(out)
    )


def _rule_text(rule: Mapping[str, Any]) -> str:
    name = rule.get("rule", "none")
    if name == "largest":
        return "keep the largest component"
    if name == "k_largest":
        return f"keep the {rule.get('k')} largest components"
    if name == "min_size":
        return f"remove components < {float(rule.get('min_volume_mm3') or 0):.4g} mm³"
    return "none"


def section_cross_validation(data: ReportData) -> str:
    labels = sorted(data.labels)
    names = data.labels
    multi = len(labels) > 1
    if data.inference is not None:
        info = data.inference
        headers: list[str | tuple[str, bool]] = ["", "candidate", ("mean Dice", True)]
        if multi:
            headers += [(f"Dice {names[lab]}", True) for lab in labels]
        headers += [("mean HD95 (mm)", True)]
        if multi:
            headers += [(f"HD95 {names[lab]}", True) for lab in labels]
        headers += [("cases", True)]
        rows = []
        for c in info.get("candidates", []):
            chosen = c.get("name") == info.get("chosen")
            cells = [
                f"<td>{'★' if chosen else ''}</td><td>{esc(c.get('name'))}</td>",
                td_num(c.get("mean_dice"), 4),
            ]
            if multi:
                cells += [td_num(c.get("per_label_dice", {}).get(str(lab)), 4) for lab in labels]
            cells.append(td_num(c.get("mean_hd95"), 2))
            if multi:
                cells += [td_num(c.get("per_label_hd95", {}).get(str(lab)), 2) for lab in labels]
            cells.append(td_num(c.get("n_cases"), 0))
            rows.append(f'<tr class="{"chosen" if chosen else ""}">{"".join(cells)}</tr>')
        folds = ", ".join(map(str, info.get("folds", [])))
        post_rows = []
        for lab in labels:
            rule = info.get("postprocessing", {}).get(str(lab), {"rule": "none"})
            trials = info.get("postprocessing_trials", {}).get(str(lab), {})
            tried = ", ".join(f"{k} {fmt(v, 4)}" for k, v in trials.items()) or _DASH
            post_rows.append(
                f"<tr><td>{esc(names.get(lab, lab))} ({lab})</td><td>{esc(_rule_text(rule))}</td>"
                f"<td>{esc(tried)}</td>"
                + td_num(info.get("cv_dice_per_label_postprocessed", {}).get(str(lab)), 4)
                + "</tr>"
            )
        skipped = info.get("skipped_configurations") or {}
        skipped_html = (
            "<p>Not compared (incomplete): "
            + esc("; ".join(f"{k}: {v}" for k, v in skipped.items()))
            + "</p>"
            if skipped
            else ""
        )
        estimate = info.get("estimate") or {}
        hold_out = estimate.get("kind") == "hold_out"
        what = "Hold-out" if hold_out else "Cross-validated"
        effect = (
            f"{what} Dice of the chosen model: {fmt(info.get('cv_dice'), 4)} without, "
            f"{fmt(info.get('cv_dice_postprocessed'), 4)} with post-processing."
        )
        note = (
            "<p><b>Estimate from one hold-out, not a cross-validation:</b> "
            + esc(estimate.get("text", ""))
            + ". The time budget was too short for five folds that each train long enough, so "
            "the plan trained one model on one training split for longer (plans.json, "
            "schedule.folds); that model is the one predict uses, and only its hold-out "
            "cases are scored here. With fewer cases the estimate is less certain than a "
            "5-fold one.</p>"
            if hold_out
            else ""
        )
        return (
            note
            + f"<p>Every candidate scored on the out-of-fold predictions of folds {esc(folds)} "
            f"({esc(info.get('n_cases', _DASH))} cases): mean over cases of the mean Dice over "
            "labels; HD95 in mm (the image diagonal when exactly one mask is empty). The "
            "highest Dice wins; candidates within 0.002 of it are tied and the lower HD95 "
            "wins. ★ = chosen (source: inference.json).</p>"
            + table(headers, rows, sortable=True, table_id="cv-table")
            + skipped_html
            + "<h3>Post-processing</h3><p>A rule is kept for a label only if it raises that "
            "label's cross-validated Dice (mean Dice per rule tried, below).</p>"
            + table(["label", "decision", "Dice per rule tried", ("Dice after", True)], post_rows)
            + f"<p><b>{esc(effect)}</b></p>"
        )
    # No find-best yet: the folds' own validation metrics.
    if not any(s.validation for fs in data.folds.values() for s in fs):
        return missing(
            "No inference.json and no validated fold yet: nothing to compare. Train the folds "
            f"(autoseg plan-and-train {data.dataset_ref}), then run autoseg find-best."
        )
    headers = ["configuration", "folds validated", ("cases", True), ("mean Dice", True)]
    if multi:
        headers += [(f"Dice {names[lab]}", True) for lab in labels]
    headers += [("mean HD95 (mm)", True)]
    rows = []
    best = max(
        (
            (float(np.mean(d)), c)
            for c, fs in data.folds.items()
            if (d := [x for s in fs if s.validation for x in fold_mean_dice(s, labels)])
        ),
        default=(math.nan, ""),
    )[1]
    for config, statuses in data.folds.items():
        per_case = [pc for s in statuses if s.validation for pc in s.validation_cases().values()]
        if not per_case:
            continue
        done = [str(s.fold) for s in statuses if s.validation]
        cells = [
            f"<td>{esc(config)}</td><td>{esc(', '.join(done))} of {len(statuses)}</td>",
            td_num(len(per_case), 0),
            td_num(mean_metric(per_case, "dice", labels), 4),
        ]
        if multi:
            cells += [td_num(mean_metric(per_case, "dice", [lab]), 4) for lab in labels]
        cells.append(td_num(mean_metric(per_case, "hd95_mm_filled", labels), 2))
        rows.append(f'<tr class="{"chosen" if config == best else ""}">{"".join(cells)}</tr>')
    return (
        missing(
            "No inference.json yet (find-best has not run): below are the configurations' own "
            "fold-validation metrics, without ensembles or post-processing. Run autoseg "
            f"find-best {data.dataset_ref} once every fold is trained."
        )
        + table(headers, rows, sortable=True, table_id="cv-table")
        + '<p class="note">Highlighted: highest mean Dice so far. Source: '
        "&lt;config&gt;/fold_&lt;k&gt;/validation/metrics.json.</p>"
    )


def _label_unit(ndim: int) -> tuple[str, str]:
    """(volume unit, word): mm³ in 3D; in 2D the 'volume' is an area in mm²."""
    return ("mm³", "volume") if ndim == 3 else ("mm²", "area")


def section_cases(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    if source is None:
        return missing(
            "No out-of-fold predictions yet: per-case metrics appear once a fold is validated."
        )
    labels = sorted(data.labels)
    names = data.labels
    multi = len(labels) > 1
    has_cohorts = bool(data.cohorts)
    ndim = next((len(r.spacing) for r in results if r.spacing), 3)
    unit, _ = _label_unit(ndim)
    headers: list[str | tuple[str, bool]] = ["case"]
    if has_cohorts:
        headers.append("cohort")
    headers.append(("fold", True))
    if multi:
        headers.append(("mean Dice", True))
    for lab in labels:
        p = f"{names[lab]} " if multi else ""
        headers += [
            (f"{p}Dice", True),
            (f"{p}HD95 (mm)", True),
            (f"{p}ASSD (mm)", True),
            (f"{p}precision", True),
            (f"{p}recall", True),
            (f"{p}reference ({unit})", True),
            (f"{p}predicted ({unit})", True),
            (f"{p}components", True),
        ]
    headers.append("failure")
    ordered = sorted(results, key=lambda r: (math.isnan(r.mean_dice), r.mean_dice, r.case))
    rows = []
    for r in ordered:
        cells = [f"<td>{esc(r.case)}</td>"]
        if has_cohorts:
            cells.append(f"<td>{esc(data.cohorts.get(r.case, ''))}</td>")
        cells.append(td_num(r.fold, 0))
        if r.error:
            n_cols = (1 if multi else 0) + 8 * len(labels)
            cells.append(f'<td colspan="{n_cols}" class="error">{esc(r.error)}</td><td></td>')
            rows.append(f"<tr>{''.join(cells)}</tr>")
            continue
        if multi:
            cells.append(td_num(r.mean_dice))
        for lab in labels:
            m = r.metrics[lab]
            cells += [
                td_num(m["dice"]),
                td_num(m["hd95_mm"], 2),
                td_num(m["assd_mm"], 2),
                td_num(m["precision"]),
                td_num(m["recall"]),
                td_size(m["volume_ref_mm3"]),
                td_size(m["volume_pred_mm3"]),
                td_num(m["n_pred_components"], 0),
            ]
        flag = '<span class="fail-flag">yes</span>' if r.failed else ""
        cells.append(f'<td data-v="{int(r.failed)}">{flag}</td>')
        rows.append(f'<tr class="{"fail" if r.failed else ""}">{"".join(cells)}</tr>')
    post = (
        "post-processing as decided in inference.json ("
        + "; ".join(
            f"{names.get(lab, lab)}: {_rule_text(r)}" for lab, r in source.postprocessing.items()
        )
        + ")"
        if source.postprocessing
        else "no post-processing"
    )
    scored = [r for r in results if not r.error]
    n_fail = sum(r.failed for r in scored)
    notes = "".join(missing(n) for n in source.notes)
    unlisted = sorted({c.case_id for c in data.cases} - set(source.case_fold))
    if unlisted and not source.notes:
        notes += missing(
            f"{len(unlisted)} training case(s) have no out-of-fold prediction of {source.name}: "
            + ", ".join(unlisted[:10])
            + (" …" if len(unlisted) > 10 else "")
        )
    return (
        f"<p>Out-of-fold predictions of <b>{esc(source.name)}</b>: {esc(source.how)}; "
        f"{esc(post)}. Each case is predicted by the fold model that did not train on it and "
        "compared with labelsTr by autoseg.evaluation.compute_metrics (HD95/ASSD empty when "
        f"one mask is empty). Sorted worst first; click a header to sort. {n_fail} of "
        f"{len(scored)} case(s) failed (Dice &lt; {FAILURE_DICE}, highlighted).</p>"
        + notes
        + table(headers, rows, sortable=True, table_id="case-table")
        + (
            '<p class="note">min-size thresholds are the final ones of inference.json '
            "(learned on all training labels); find-best learned them per fold, so its "
            "post-processed CV Dice can differ slightly.</p>"
            if any(r.get("rule") == "min_size" for r in source.postprocessing.values())
            else ""
        )
    )


def overlay_panels(
    image: np.ndarray | None, ref: np.ndarray, seg: np.ndarray, case: str
) -> list[assets.OverlayPanel]:
    """The slices to show: 2D -> the image; 3D -> three slices along z spread over the
    reference's extent (a sixth in from each end and the middle: proximal, middle and distal
    nerve); with fewer than three reference slices, the slices with the most predicted, then
    the middle."""
    ref_fg = ref > 0
    seg_fg = seg > 0
    if image is None or image.shape != ref.shape:
        image = np.zeros(ref.shape, dtype=np.float32)
    if ref.ndim == 2:
        return [assets.OverlayPanel(image, ref_fg, seg_fg, "")]
    depth = ref.shape[0]
    ref_slices = np.flatnonzero(ref_fg.reshape(depth, -1).any(axis=1))
    chosen: list[int] = []
    if ref_slices.size >= 3:
        for q in (1 / 6, 1 / 2, 5 / 6):
            chosen.append(int(ref_slices[min(ref_slices.size - 1, int(q * ref_slices.size))]))
    else:
        chosen = [int(s) for s in ref_slices]
        pred_area = seg_fg.reshape(depth, -1).sum(axis=1)
        for s in np.argsort(-pred_area, kind="stable"):
            if pred_area[s] == 0 or len(chosen) >= 3:
                break
            if int(s) not in chosen:
                chosen.append(int(s))
        for s in (depth // 2, depth // 2 - 1, depth // 2 + 1):
            if len(chosen) < min(3, depth) and 0 <= s < depth and s not in chosen:
                chosen.append(s)
    chosen = sorted(dict.fromkeys(chosen))
    return [
        assets.OverlayPanel(
            image[k], ref_fg[k], seg_fg[k], f"slice z = {k} ({int(ref_fg[k].sum())} ref. voxels)"
        )
        for k in chosen
    ]


def read_grey(path: Path | None) -> np.ndarray | None:
    """Channel 0 of a case as a float image (grey RGB collapsed; colour: mean of channels)."""
    if path is None or not path.is_file():
        return None
    data = read_image(path)
    arr = data.array
    if arr.ndim > data.geometry.ndim:
        try:
            arr = collapse_grey_rgb(arr, path)
        except AutosegError:
            arr = arr[..., :3].mean(axis=-1)
    return np.asarray(arr, dtype=np.float32)


def section_worst(
    data: ReportData,
    source: Source | None,
    results: list[CaseResult],
    jobs: Mapping[str, CaseJob],
    max_worst: int,
) -> str:
    if source is None:
        return missing("No out-of-fold predictions yet.")
    scored = sorted((r for r in results if not r.error), key=lambda r: (r.mean_dice, r.case))
    if not scored:
        return missing("No case could be scored (see the per-case table).")
    if max_worst <= 0:
        return '<p class="note">Not requested (max_worst = 0).</p>'
    figs = []
    for r in scored[:max_worst]:
        job = jobs[r.case]
        seg, ref, spacing = segment_case(job)
        image = read_grey(job.image)
        panels = overlay_panels(image, ref, seg, r.case)
        cohort = data.cohorts.get(r.case)
        title = f"{r.case}: Dice {r.mean_dice:.3f}" + (f" ({cohort})" if cohort else "")
        png = assets.plot_overlays(panels, spacing[-2:], title)
        scores = "; ".join(
            f"{data.labels[lab]}: Dice {fmt(m['dice'])}, HD95 {fmt(m['hd95_mm'], 1)} mm, "
            f"{int(m['n_pred_components'])} predicted component(s)"
            for lab, m in r.metrics.items()
        )
        figs.append(figure(png, f"overlay {r.case}", f"{r.case} (fold {r.fold}): {scores}"))
    where = (
        "three slices along z spread over the reference nerve (proximal, middle, distal)"
        if len(scored[0].spacing) == 3
        else "the whole frame"
    )
    return (
        f"<p>The {len(figs)} lowest-Dice case(s) of {esc(source.name)}: image in grey "
        "(1st-99th percentile window), reference contour <b style='color:#00a000'>green</b>, "
        "prediction contour <b style='color:#e00000'>red</b>, cropped to a window around "
        f"both (at least 30 mm); {where}.</p>" + "".join(figs)
    )


def _rel_diff(pred: float, ref: float) -> float:
    return 100.0 * (pred - ref) / ref if ref and not is_missing(ref) else math.nan


def csa_profile(r: CaseResult, label: int) -> assets.CsaProfile | None:
    m = r.measures.get(label)
    if not m or not m["ref"]["profile"]:
        return None
    ref_p, pred_p = m["ref"]["profile"], m["pred"]["profile"]
    keys = [*ref_p, *pred_p]
    span = range(min(keys), max(keys) + 1)  # absent slices count as 0 so gaps show
    mm = [k * m["slice_mm"] for k in span]
    return assets.CsaProfile(
        r.case,
        float(r.metrics[label]["dice"]),
        mm,
        [ref_p.get(k, 0.0) for k in span],
        mm,
        [pred_p.get(k, 0.0) for k in span],
    )


def section_measurements(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    if source is None:
        return missing("No out-of-fold predictions to measure yet.")
    scored = [r for r in results if not r.error and r.measures]
    if not scored:
        return missing("No case could be measured.")
    labels = sorted(data.labels)
    ndim = len(scored[0].spacing)
    unit, word = _label_unit(ndim)
    headers: list[str | tuple[str, bool]] = ["case"]
    if data.cohorts:
        headers.append("cohort")
    headers += ["label", (f"ref. {word} ({unit})", True), ("pred.", True), ("Δ %", True)]
    headers += [("ref. mean CSA (mm²)", True), ("pred.", True), ("Δ %", True)]
    if ndim == 3:
        headers += [("ref. length (mm)", True), ("pred.", True), ("branches ref. / pred.", True)]
    rows = []
    for r in sorted(scored, key=lambda r: r.case):
        for lab in labels:
            m = r.measures[lab]
            ref, pred = m["ref"], m["pred"]
            vol_ref = ref["volume_mm3"] if ndim == 3 else ref["csa_mean_mm2"]
            vol_pred = pred["volume_mm3"] if ndim == 3 else pred["csa_mean_mm2"]
            cells = [f"<td>{esc(r.case)}</td>"]
            if data.cohorts:
                cells.append(f"<td>{esc(data.cohorts.get(r.case, ''))}</td>")
            cells += [
                f"<td>{esc(data.labels[lab])}</td>",
                td_size(vol_ref),
                td_size(vol_pred),
                td_num(_rel_diff(vol_pred, vol_ref), 1),
                td_size(ref["csa_mean_mm2"]),
                td_size(pred["csa_mean_mm2"]),
                td_num(_rel_diff(pred["csa_mean_mm2"], ref["csa_mean_mm2"]), 1),
            ]
            if ndim == 3:
                cells += [
                    td_num(ref["length_mm"], 1),
                    td_num(pred["length_mm"], 1),
                    f'<td class="n">{ref["n_branches"]} / {pred["n_branches"]}</td>',
                ]
            rows.append(f"<tr>{''.join(cells)}</tr>")
    primary = data.primary_label
    pname = data.labels.get(primary, str(primary))
    ref_csa = [r.measures[primary]["ref"]["csa_mean_mm2"] for r in scored]
    pred_csa = [r.measures[primary]["pred"]["csa_mean_mm2"] for r in scored]
    diffs = np.array([p - q for p, q in zip(pred_csa, ref_csa)], dtype=float)
    diffs = diffs[np.isfinite(diffs)]
    agreement = (
        f"{pname} mean CSA, prediction − reference: {np.mean(diffs):+.2f} ± "
        f"{np.std(diffs, ddof=1) if diffs.size > 1 else 0.0:.2f} mm² (mean ± sd over "
        f"{diffs.size} cases with the nerve in both)."
        if diffs.size
        else ""
    )
    quantities = [("mean CSA (mm²)", ref_csa, pred_csa)]
    if ndim == 3:
        quantities.append(
            (
                "volume (mm³)",
                [r.measures[primary]["ref"]["volume_mm3"] for r in scored],
                [r.measures[primary]["pred"]["volume_mm3"] for r in scored],
            )
        )
    figs = [
        figure(
            assets.plot_agreement(quantities, pname),
            "measurement agreement",
            "One dot per case; dotted: identity.",
        )
    ]
    if ndim == 3:
        ranked = sorted(
            (r for r in scored if r.measures[primary]["ref"]["profile"]),
            key=lambda r: (r.metrics[primary]["dice"], r.case),
        )
        picks = []
        if ranked:
            for i in (0, len(ranked) // 2, len(ranked) - 1):
                if ranked[i] not in picks:
                    picks.append(ranked[i])
        profiles = [p for r in picks[:CSA_PLOT_CASES] if (p := csa_profile(r, primary))]
        if profiles:
            figs.append(
                figure(
                    assets.plot_csa_profiles(profiles, pname),
                    "CSA along the nerve",
                    "Total perpendicular CSA per slice along the nerve for the worst, median "
                    "and best case by Dice; reference green, prediction red.",
                )
            )
    return (
        "<p>Computed here with autoseg.evaluation.measure_nerve on the reference and on the "
        "out-of-fold prediction, both sliced along the reference nerve's longest axis. Mean "
        "CSA: mean over slices of the total perpendicular cross-sectional area in the slice "
        "(in 2D: the label's area). Same method as autoseg measure "
        "(documentation/measurements.md).</p>"
        + (f"<p><b>{esc(agreement)}</b></p>" if agreement else "")
        + "".join(figs)
        + table(headers, rows, sortable=True, table_id="measure-table")
    )


def _stat_text(stats: Mapping[str, float], digits: int) -> tuple[str, str]:
    if not stats["n"]:
        return _DASH, _DASH
    mean_sd = f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"
    med = f"{stats['median']:.{digits}f} [{stats['q1']:.{digits}f}–{stats['q3']:.{digits}f}]"
    return mean_sd, med


def section_cohorts(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    if not data.cohorts:
        return '<p class="note">dataset.json names no cohorts (cases.&lt;case&gt;.cohort).</p>'
    scored = [r for r in results if not r.error]
    if source is None or not scored:
        return missing("No scored out-of-fold predictions yet.")
    labels = sorted(data.labels)
    groups: dict[str, list[CaseResult]] = {"all": scored}
    for r in scored:
        c = data.cohorts.get(r.case)
        if c:
            groups.setdefault(c, []).append(r)
    rows = []
    for g, members in groups.items():
        for lab in labels:
            dice_mean, dice_med = _stat_text(describe(r.metrics[lab]["dice"] for r in members), 3)
            hd = describe(r.metrics[lab]["hd95_mm"] for r in members)
            hd_mean, hd_med = _stat_text(hd, 2)
            undefined = f" ({hd['n_undefined']} undefined)" if hd["n_undefined"] else ""
            fails = sum(r.metrics[lab]["dice"] < FAILURE_DICE for r in members)
            rows.append(
                f'<tr class="{"chosen" if g == "all" else ""}"><td>{esc(g)}</td>'
                f"<td>{esc(data.labels[lab])}</td>"
                f'<td class="n">{len(members)}</td><td class="n">{esc(dice_mean)}</td>'
                f'<td class="n">{esc(dice_med)}</td><td class="n">{esc(hd_mean)}</td>'
                f'<td class="n">{esc(hd_med + undefined)}</td>'
                f'<td class="n">{fails} / {len(members)}</td></tr>'
            )
    headers = [
        "cohort",
        "label",
        ("cases", True),
        ("Dice mean ± sd", True),
        ("Dice median [IQR]", True),
        ("HD95 mm mean ± sd", True),
        ("HD95 mm median [IQR]", True),
        ("failures", True),
    ]
    primary = data.primary_label
    by_group = {g: [r.metrics[primary]["dice"] for r in members] for g, members in groups.items()}
    pname = data.labels.get(primary, str(primary))
    return (
        "<p>Out-of-fold metrics of the per-case table, grouped by the cohort in dataset.json. "
        "sd with ddof = 1; IQR = 25th–75th percentile; HD95 undefined (one mask empty) is "
        "left out and counted.</p>"
        + table(headers, rows, table_id="cohort-table")
        + figure(
            assets.plot_dice_by_group(by_group, pname),
            "Dice by cohort",
            f"{pname} Dice per case by cohort; bar: median; dashed: failure threshold "
            f"{FAILURE_DICE}.",
        )
    )


# --------------------------------------------------------------------------------------------
# The page


def _guarded(render: Callable[[], str]) -> str:
    """A section that cannot be built says why instead of taking the whole report down."""
    try:
        return render()
    except _SECTION_ERRORS as exc:
        return f'<p class="error">This section could not be built: {esc(exc)}</p>'


def render_page(data: ReportData, bodies: Mapping[str, str]) -> str:
    title = f"autoseg report: {data.raw.name}"
    toc = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name in SECTIONS)
    sections = "".join(
        f'<section id="{sid}"><h2>{esc(name)}</h2>{bodies.get(sid, "")}</section>'
        for sid, name in SECTIONS
    )
    subtitle = data.ds.name or data.raw.name
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="autoseg {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{assets.CSS}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1>'
        f'<p class="sub">{esc(subtitle)} · {len(data.cases)} cases · labels '
        f"{esc(', '.join(data.labels.values()))}</p>"
        f'<nav class="toc">{toc}</nav></header>'
        f"{sections}"
        '<p class="note">Written by autoseg report; every number comes from the files under '
        f"<code>{esc(data.res)}</code> and <code>{esc(data.raw)}</code> "
        "(documentation/report.md).</p>"
        f"<script>{assets.SORT_JS}</script></body></html>\n"
    )


def build_report(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    max_worst: int = MAX_WORST,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``results/<ds>/report.html`` (or ``out``) atomically and return its path.

    ``max_worst`` lowest-Dice cases get overlay figures; ``num_workers`` processes score the
    cases (default min(4, CPUs); 0 = in this process).
    """
    if max_worst < 0:
        raise AutosegError(f"max_worst {max_worst} must be 0 or more", fix="use e.g. 5")
    data = gather(dataset, root)
    source = choose_source(data)
    jobs = case_jobs(data, source) if source is not None else []
    results: list[CaseResult] = (
        map_cases(score_case, jobs, num_workers=num_workers, progress=progress, desc="report")
        if jobs
        else []
    )
    by_case = {j.case: j for j in jobs}
    bodies = {
        "overview": _guarded(lambda: section_overview(data, source, results)),
        "plan": _guarded(lambda: section_plan(data)),
        "training": _guarded(lambda: section_training(data)),
        "cross-validation": _guarded(lambda: section_cross_validation(data)),
        "cases": _guarded(lambda: section_cases(data, source, results)),
        "worst-cases": _guarded(lambda: section_worst(data, source, results, by_case, max_worst)),
        "measurements": _guarded(lambda: section_measurements(data, source, results)),
        "cohorts": _guarded(lambda: section_cohorts(data, source, results)),
    }
    page = render_page(data, bodies)
    path = Path(out) if out is not None else data.res / REPORT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
