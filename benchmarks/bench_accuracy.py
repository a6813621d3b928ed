"""Cross-validated accuracy at an equal wall-clock training budget per fold: autoseg vs nnU-Net v2.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.bench_accuracy \\
        --dataset phantom_mri3d|usgra_seg|brats2015_subset|phantom_us2d --fold-budget 10m \\
        [--folds all|0,1] [--cases N] [--cpus 1] [--threads 1] [--workers 0] \\
        [--nnunet-config 3d_fullres|2d] [--work DIR] [--json PATH]

Smoke run (~7 min on one shared core): ``--dataset phantom_mri3d --cases 10 --fold-budget 1m
--folds 0``.

**Data and folds.** ``benchmarks/accuracy_cv.py``'s ``prepare()`` converts the dataset (the
thigh phantom: 20 cases of ``generate_phantom('mri3d', seed=1)``; ``usgra_seg``: 204 labelled
ultrasound frames, nerve = 1, vessel = 2; the BraTS subset: 6 cases, FLAIR + T1c). ``--cases N``
keeps the first N cases (a hard-linked copy under its own name and id), for smoke runs. Folds
are autoseg's ``splits.json`` (5 folds, grouped by subject where ``dataset.json`` names
subjects — the phantom does; usgra_seg has no subject ids, so every image is its own group),
written before either system trains; nnU-Net gets the identical folds as ``splits_final.json``
(``nnunet_bridge.write_nnunet_splits``).

**autoseg** runs what a user runs: ``plan_and_train(dataset, time_budget_s = fold budget x 5,
device="cpu", folds=k)`` — its planner measures step times on this machine and fits patch,
batch, widths and schedule to the budget (all planned configurations share it; its own
start-up reserve and validation estimate come out of each fold's share). Per-fold Dice and
HD95 come from each fold's ``validation/metrics.json`` (``accuracy_cv.fold_scores``).

**nnU-Net** runs what a user runs with the same budget: ``export_nnunet`` of the same converted
dataset, ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG -np 1 -npfp 1`` (its default plan,
unchanged), then ``nnUNetTrainer`` with the budget imposed by a subclass
(``nnUNetTrainerBudget``, built in a ``.venv-bench`` process by this file's
``--nnunet-driver`` mode): the clock starts when ``run_training`` starts; a short first epoch
(:func:`probe_should_stop`: ~5 % of the budget, at most 250 iterations) measures seconds per
training and per validation iteration and the per-epoch overhead (logging, checkpoint, progress
plot); then :func:`fit_nnunet_schedule` sets ``num_epochs`` (and the poly learning-rate
schedule's length) so that the whole schedule ends within the budget at nnU-Net's default 250
iterations (+ 50 pseudo-Dice iterations) per epoch — or, when even one such epoch does not fit,
fewer iterations per epoch spread over up to 10 epochs so that the learning rate still decays.
Training also stops hard before an iteration predicted to end past the budget (an
iteration cannot be cut short, so a budget below one iteration still runs one). Then nnU-Net's
own ``perform_actual_validation`` (sliding window, Gaussian weighting, mirroring) writes
``validation/summary.json``. HD95 (and Dice again) of its predictions are computed with
autoseg's ``compute_metrics`` against the same reference files, written as
``validation/metrics.json`` and averaged by the same ``fold_scores``, so both systems' figures
share one definition (Dice of a label absent from both masks = 1; HD95 of an empty mask = the
image diagonal). nnU-Net's own summary Dice (which ignores such labels) is reported beside it.

**Equal conditions.** Folds alternate: autoseg fold 0, nnU-Net fold 0, autoseg fold 1, ... so
that other work on the machine hits both alike. Every process is pinned to ``--cpus`` with
``--threads`` torch/OpenMP threads and ``--workers`` augmentation processes (autoseg
``num_workers``, nnU-Net ``nnUNet_n_proc_DA``). Planning, preprocessing and the end-of-fold
validation are outside both budgets (autoseg's planner nevertheless reserves its validation
estimate out of the fold budget, so its epoch loop gets somewhat less than nnU-Net's; both
epoch-loop times are reported). Validation differs as each system ships it on a CPU: nnU-Net
mirrors (test-time augmentation), a time-budgeted autoseg CPU plan does not.

**Output.** Per dataset and budget: mean CV Dice (target ratio >= 1: autoseg at least as good),
mean HD95, training iterations and epoch-loop seconds per fold; per-fold values in ``runs``,
the paired difference ± its SD across folds in the note. Printed with ``format_table`` and
written (``benchmarks/results.py``) to ``--json`` (default
``benchmarks/results/accuracy_<dataset>[_n<cases>]_<budget>.json``).

**Resumable.** Everything lives under ``--work`` (default
``autoseg_data/bench_accuracy/<dataset>[_n<cases>]_<budget>``); a rerun skips finished folds of
either system (a fold is finished when its record ``folds/<system>_fold<k>.json`` exists). An
interrupted autoseg fold resumes from its last epoch (its own resume); an interrupted nnU-Net
fold restarts its training (a resumed fold's clock would not be comparable), or only its
validation when training had finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from autoseg.layout import ResultsLayout
from benchmarks.results import (
    DEFAULT_NNUNET_CONFIG,
    REPO,
    Result,
    checkout_env,
    format_table,
    from_runs,
    module_command,
    write_results,
)

BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
N_FOLDS = 5
DRIVER_FLAG = "--nnunet-driver"
TRAINER_NAME = "nnUNetTrainerBudget"
NNUNET_PLANS = "nnUNetPlans"
TRAINING_RECORD = "budget_training.json"  # the driver's record of a finished training
VALIDATION_RECORD = "budget_validation.json"
SUBSET_ID_OFFSET = 40  # --cases: the subset's dataset id (931 -> 971), distinct from the full set

# nnU-Net's defaults (nnUNetTrainer.__init__) that the budget fit keeps when it can.
NNUNET_ITERATIONS_PER_EPOCH = 250
NNUNET_VAL_ITERATIONS_PER_EPOCH = 50
NNUNET_MAX_EPOCHS = 1000
# The first (probe) epoch stops after this share of the budget (at least PROBE_MIN_ITERATIONS,
# at most a full epoch): long enough to time a few iterations after the first (which pays for
# lazy initialisation), short enough to leave the schedule its budget.
PROBE_SHARE = 0.05
PROBE_MIN_ITERATIONS = 3
# When not even one 250-iteration epoch fits, what fits is spread over up to this many epochs,
# so that nnU-Net's per-epoch poly learning rate still decays (autoseg's planner keeps at least
# 10 epochs for the same reason).
SHORT_SCHEDULE_EPOCHS = 10
# Fit the schedule to this share of the remaining time: timing noise then rarely hits the hard
# stop in the last epoch.
FIT_SAFETY = 0.98


# --------------------------------------------------------------------------- pure helpers
def budget_label(text: str) -> str:
    """``"10m"`` -> ``"10m"``, ``"1h 30m"`` -> ``"1h30m"``: the budget as written, safe in
    file names (results of different budgets must never share a folder or a JSON)."""
    label = "".join(ch for ch in str(text).lower() if ch.isalnum() or ch == ".")
    if not label:
        raise ValueError(f"empty budget {text!r}")
    return label if not label.replace(".", "").isdigit() else f"{label}s"


def run_label(dataset: str, cases: int | None, budget: str) -> str:
    """``phantom_mri3d_10m`` or ``phantom_mri3d_n10_1m``: names the work folder and the JSON."""
    sub = f"_n{cases}" if cases else ""
    return f"{dataset}{sub}_{budget_label(budget)}"


def val_iterations_for(iterations_per_epoch: int) -> int:
    """Pseudo-Dice iterations of an epoch: nnU-Net's 50 per 250 training iterations, scaled
    down with shorter epochs (at least 1, the checkpoint_best rhythm needs a value)."""
    ratio = NNUNET_VAL_ITERATIONS_PER_EPOCH / NNUNET_ITERATIONS_PER_EPOCH
    return max(1, round(iterations_per_epoch * ratio))


def budget_left(budget_s: float, started_unix: float | None, now_unix: float) -> float:
    """Seconds of ``budget_s`` left at ``now_unix`` when its clock started at ``started_unix``
    (a ``time.time()``, taken before the driver process was launched, so that the driver's
    start-up — imports, the trainer's construction — is counted); never below 0. Without
    ``started_unix`` the whole budget is left (the clock starts in ``run_training``)."""
    if started_unix is None:
        return max(0.0, float(budget_s))
    return max(0.0, float(budget_s) - max(0.0, now_unix - float(started_unix)))


def probe_should_stop(done: int, elapsed_s: float, probe_s: float) -> bool:
    """Whether the probe epoch has timed enough: PROBE_MIN_ITERATIONS iterations and
    ``probe_s`` seconds, or a full nnU-Net epoch, whichever comes first."""
    if done >= NNUNET_ITERATIONS_PER_EPOCH:
        return True
    return done >= PROBE_MIN_ITERATIONS and elapsed_s >= probe_s


def mean_iteration_s(iteration_seconds: Sequence[float]) -> float:
    """Seconds per iteration from the probe: the first iteration pays for lazy set-up (thread
    pools, allocator, first batch), so it is left out when there are others."""
    times = list(iteration_seconds)
    if not times:
        raise ValueError("no iterations timed")
    tail = times[1:] if len(times) > 1 else times
    return statistics.fmean(tail)


@dataclass(frozen=True)
class NnunetSchedule:
    """What the rest of an nnU-Net fold runs after the probe epoch."""

    epochs: int  # epochs after the probe epoch (the schedule has 1 + epochs)
    iterations_per_epoch: int
    val_iterations: int
    epoch_s: float  # predicted seconds of one such epoch

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch


def _epoch_cost(ipe: int, iteration_s: float, val_iteration_s: float, overhead_s: float) -> float:
    return ipe * iteration_s + val_iterations_for(ipe) * val_iteration_s + overhead_s


def fit_nnunet_schedule(
    remaining_s: float, iteration_s: float, val_iteration_s: float, overhead_s: float
) -> NnunetSchedule:
    """Epochs (and iterations per epoch) of nnU-Net's schedule that fit ``remaining_s``.

    nnU-Net's default: epochs of 250 training + 50 pseudo-Dice iterations; as many as fit (at
    most its 1000 minus the probe epoch). Only if not even one fits, iterations per epoch are
    cut: the most that fit in SHORT_SCHEDULE_EPOCHS epochs (fewer epochs when per-epoch
    overhead leaves no iteration in ten). Nothing fits -> 0 epochs.
    """
    if min(iteration_s, val_iteration_s, overhead_s) < 0 or iteration_s <= 0:
        raise ValueError("iteration times must be positive and overheads >= 0")
    budget = max(0.0, remaining_s) * FIT_SAFETY
    full = _epoch_cost(NNUNET_ITERATIONS_PER_EPOCH, iteration_s, val_iteration_s, overhead_s)
    if budget >= full:
        epochs = min(NNUNET_MAX_EPOCHS - 1, int(budget // full))
        return NnunetSchedule(
            epochs, NNUNET_ITERATIONS_PER_EPOCH, NNUNET_VAL_ITERATIONS_PER_EPOCH, full
        )
    for epochs in range(SHORT_SCHEDULE_EPOCHS, 0, -1):
        per_epoch = budget / epochs
        ipe = int((per_epoch - overhead_s) // (iteration_s + val_iteration_s / 5))
        while ipe > 0 and _epoch_cost(ipe, iteration_s, val_iteration_s, overhead_s) > per_epoch:
            ipe -= 1
        if ipe >= 1:
            cost = _epoch_cost(ipe, iteration_s, val_iteration_s, overhead_s)
            return NnunetSchedule(epochs, ipe, val_iterations_for(ipe), cost)
    return NnunetSchedule(0, 0, 0, 0.0)


def paired_difference(
    autoseg: Mapping[int, float], nnunet: Mapping[int, float]
) -> tuple[float, float | None, int] | None:
    """Mean and SD over folds of autoseg - nnU-Net on the folds both have: the SD says how much
    of a difference between the means the fold-to-fold spread could explain."""
    folds = sorted(set(autoseg) & set(nnunet))
    diffs = [autoseg[f] - nnunet[f] for f in folds]
    if not diffs:
        return None
    sd = statistics.stdev(diffs) if len(diffs) > 1 else None
    return statistics.fmean(diffs), sd, len(diffs)


def describe_difference(
    diff: tuple[float, float | None, int] | None, fmt: str = "+.3f", unit: str = "fold"
) -> str:
    """``"autoseg - nnU-Net +0.123 ± 0.045 (SD over 5 folds)"``; ``unit`` names what the
    pairs are (folds, or test images)."""
    if diff is None:
        return f"no {unit} measured by both systems"
    mean, sd, n = diff
    spread = f" ± {sd:{fmt.lstrip('+')}}" if sd is not None else ""
    return f"autoseg - nnU-Net {mean:{fmt}}{spread} (SD over {n} {unit}{'s' if n != 1 else ''})"


def summary_dice(summary: Mapping[str, Any]) -> float | None:
    """nnU-Net's own fold Dice from its ``validation/summary.json``: ``foreground_mean`` (mean
    over labels of the per-label mean over cases; a label absent from both masks is NaN there
    and left out)."""
    value = summary.get("foreground_mean", {}).get("Dice")
    return None if value is None or not math.isfinite(float(value)) else float(value)


def autoseg_metrics_document(per_case: Mapping[str, Mapping[int, Mapping[str, float]]]) -> dict:
    """``validation/metrics.json`` in autoseg's shape (``{"cases": {case: {label: metrics}}}``)
    so that ``accuracy_cv.fold_scores`` averages nnU-Net's predictions exactly as autoseg's."""
    from autoseg.io.atomic import json_safe

    cases = {
        case: {str(lab): {k: json_safe(v) for k, v in m.items()} for lab, m in labels.items()}
        for case, labels in per_case.items()
    }
    return {"cases": cases, "source": "autoseg.evaluation.metrics.compute_metrics"}


def choose_autoseg_config(records: Sequence[Mapping[str, Any]], chosen: str | None) -> str | None:
    """The configuration whose folds stand for autoseg: find-best's choice when it is a single
    configuration, else (an ensemble, or none yet) the trained configuration with the highest
    mean fold Dice."""
    configs: dict[str, list[float]] = {}
    for rec in records:
        for name, row in rec.get("configs", {}).items():
            if row.get("dice") is not None:
                configs.setdefault(name, []).append(float(row["dice"]))
    if chosen in configs:
        return chosen
    if not configs:
        return None
    return max(configs, key=lambda c: statistics.fmean(configs[c]))


def build_results(
    title: str,
    autoseg: Mapping[int, Mapping[str, Any]],
    nnunet: Mapping[int, Mapping[str, Any]],
) -> list[Result]:
    """The compared figures from per-fold rows (``{fold: {"dice", "hd95", "iterations",
    "train_s", ...}}``): mean CV Dice and HD95 (means: the cross-validation convention),
    iterations and epoch-loop seconds per fold (medians)."""

    def per_fold(rows: Mapping[int, Mapping[str, Any]], key: str) -> dict[int, float]:
        return {f: float(r[key]) for f, r in sorted(rows.items()) if r.get(key) is not None}

    out = []
    for key, metric, unit, better, fmt in (
        ("dice", "mean CV Dice over folds", "Dice", "higher", "+.3f"),
        ("hd95", "mean CV HD95 over folds", "mm", "lower", "+.2f"),
    ):
        a, n = per_fold(autoseg, key), per_fold(nnunet, key)
        note = describe_difference(paired_difference(a, n), fmt)
        if key == "dice":
            own = per_fold(nnunet, "summary_dice")
            if own:
                note += "; nnU-Net summary.json Dice per fold " + ", ".join(
                    f"{v:.3f}" for v in own.values()
                )
        out.append(
            Result(
                f"{title}: {key.upper() if key == 'hd95' else 'Dice'}",
                metric,
                unit,
                statistics.fmean(a.values()) if a else None,
                statistics.fmean(n.values()) if n else None,
                better,
                1.0,
                {"autoseg": list(a.values()), "nnunet": list(n.values())},
                note + f" (folds {sorted(set(a) | set(n))})",
            )
        )
    out.append(
        from_runs(
            f"{title}: training iterations",
            "training iterations per fold (median)",
            "iterations",
            list(per_fold(autoseg, "iterations").values()),
            list(per_fold(nnunet, "iterations").values()),
            "higher",
            note="what each system managed in the budget (autoseg's planner shrinks patch, batch "
            "and widths to fit it, so its iterations are cheaper)",
        )
    )
    out.append(
        from_runs(
            f"{title}: epoch-loop seconds",
            "training epoch-loop wall seconds per fold (median)",
            "s",
            list(per_fold(autoseg, "train_s").values()),
            list(per_fold(nnunet, "train_s").values()),
            "lower",
            note="not a target: shows both used the budget (validation excluded)",
        )
    )
    return out


# --------------------------------------------------------------------------- data set-up
def make_subset(root: Path, folder: str, n_cases: int) -> str:
    """The first ``n_cases`` training cases of a converted dataset as a dataset of their own
    (hard links; id + SUBSET_ID_OFFSET, name + ``N<n>``), for smoke runs. The phantoms'
    first N cases equal an N-case phantom, so this is a smaller phantom."""
    from dataclasses import replace

    from autoseg.io import list_cases, load_dataset_json
    from autoseg.paths import dataset_folder_name, parse_dataset_folder, raw_dir

    parsed = parse_dataset_folder(folder)
    if parsed is None:
        raise SystemExit(f"{folder}: not a <NNN>_<Name> dataset folder")
    src = raw_dir(root) / folder
    sub = dataset_folder_name(parsed[0] + SUBSET_ID_OFFSET, f"{parsed[1]}N{n_cases}")
    target = raw_dir(root) / sub
    if (target / "dataset.json").is_file():
        return sub
    ds = load_dataset_json(src)
    cases = list_cases(src, ds)
    if n_cases < N_FOLDS or n_cases > len(cases):
        raise SystemExit(f"--cases {n_cases}: need {N_FOLDS}..{len(cases)} cases")
    tmp = target.with_name(f".{sub}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for case in cases[:n_cases]:
        for path in (*case.images, case.label):
            assert path is not None
            dst = tmp / path.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dst)
            except OSError:
                shutil.copyfile(path, dst)
    keep = {c.case_id for c in cases[:n_cases]}
    subset = replace(
        ds,
        num_training=n_cases,
        name=f"{ds.name or parsed[1]}N{n_cases}",
        cases={k: v for k, v in ds.cases.items() if k in keep},
    )
    subset.save(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return sub


def ensure_splits(root: Path, folder: str) -> list[dict[str, list[str]]]:
    """autoseg's ``splits.json``, created now exactly as ``autoseg.training.run.train`` would
    (same function, same arguments), so that both systems train on it from the first fold."""
    from autoseg.io import list_cases, load_dataset_json
    from autoseg.paths import raw_dir, results_dir
    from autoseg.training.splits import load_or_create_splits

    raw = raw_dir(root) / folder
    ds = load_dataset_json(raw)
    ids = [c.case_id for c in list_cases(raw, ds)]
    return load_or_create_splits(
        results_dir(root) / folder / "splits.json",
        ids,
        [ds.subject_of(c) for c in ids],
        [ds.cohort_of(c) for c in ids],
        n_folds=N_FOLDS,
    )


@dataclass
class Context:
    """Where one benchmark run keeps its data, and the settings both systems share."""

    dataset: str
    work: Path
    root: Path  # autoseg's data root
    folder: str  # autoseg's dataset folder, e.g. 931_PhantomMRI3D
    nn_dirs: dict[str, Path]  # nnUNet_raw / nnUNet_preprocessed / nnUNet_results
    nn_folder: str  # Dataset931_PhantomMRI3D
    nn_config: str
    fold_budget_s: float
    threads: int
    workers: int
    env: dict[str, str]  # thread / worker settings for every child process
    plans_name: str = NNUNET_PLANS  # nnU-Net's plans identifier (autosegPlans: the bridge's)

    @property
    def records(self) -> Path:
        return self.work / "folds"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def nn_fold_parent(self) -> Path:
        return (
            self.nn_dirs["nnUNet_results"]
            / self.nn_folder
            / f"{TRAINER_NAME}__{self.plans_name}__{self.nn_config}"
        )

    def nn_env(self, workers: int | None = None) -> dict[str, str]:
        """The environment of this context's nnU-Net processes: its folders and worker count,
        and this checkout first on ``PYTHONPATH`` (the fold driver and the budget trainer's
        shim import ``benchmarks.bench_accuracy`` in ``.venv-bench``)."""
        env = checkout_env({**self.env, **{k: str(v) for k, v in self.nn_dirs.items()}})
        env["nnUNet_n_proc_DA"] = str(self.workers if workers is None else workers)
        env["nnUNet_def_n_proc"] = "1"
        env["nnUNet_compile"] = "0"
        return env


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temp file + rename): a crash never leaves a half record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)


def _run_logged(cmd: Sequence[str], env: Mapping[str, str], log: Path, what: str) -> float:
    """Run a command with its output appended to ``log``; its wall seconds. Exits with the
    log's tail when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(str(c) for c in cmd)}\n")
        fh.flush()
        rc = subprocess.run(
            [str(c) for c in cmd], env=dict(env), stdout=fh, stderr=subprocess.STDOUT, check=False
        ).returncode
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{what} failed (exit {rc}); end of {log}:\n{tail}")
    return time.perf_counter() - t0


def setup_nnunet(ctx: Context, splits: list[dict[str, list[str]]]) -> dict[str, float]:
    """Export, plan and preprocess for nnU-Net once (its default plan), and write the folds.
    Returns the seconds spent (outside the training budget, like autoseg's planning)."""
    from autoseg.io.nnunet import export_nnunet
    from autoseg.paths import raw_dir

    try:
        from benchmarks.nnunet_bridge import write_nnunet_splits
    except ImportError as exc:
        raise SystemExit(f"benchmarks/nnunet_bridge.py is needed for the folds ({exc})") from exc

    spent: dict[str, float] = {}
    raw_nn = ctx.nn_dirs["nnUNet_raw"]
    pre = ctx.nn_dirs["nnUNet_preprocessed"] / ctx.nn_folder
    if not (raw_nn / ctx.nn_folder / "dataset.json").is_file():
        t0 = time.perf_counter()
        export_nnunet(raw_dir(ctx.root) / ctx.folder, raw_nn, overwrite=True, progress=False)
        spent["export_s"] = time.perf_counter() - t0
    plans = pre / f"{NNUNET_PLANS}.json"
    data = pre / f"{NNUNET_PLANS}_{ctx.nn_config}"
    if not (plans.is_file() and data.is_dir() and (pre / "gt_segmentations").is_dir()):
        parsed_id = int(ctx.nn_folder[len("Dataset") : len("Dataset") + 3])
        cmd = [
            BENCH_PYTHON.parent / "nnUNetv2_plan_and_preprocess",
            "-d",
            str(parsed_id),
            "-c",
            ctx.nn_config,
            "-np",
            "1",
            "-npfp",
            "1",
        ]
        # its planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 would crash it
        env = ctx.nn_env(workers=max(1, ctx.threads))
        spent["plan_and_preprocess_s"] = _run_logged(
            cmd, env, ctx.logs / "nnunet_plan.log", "nnUNetv2_plan_and_preprocess"
        )
    write_nnunet_splits(splits, pre / "splits_final.json")
    return spent


# --------------------------------------------------------------------------- autoseg folds
def autoseg_fold(ctx: Context, fold: int) -> dict[str, Any]:
    """One fold of ``plan_and_train`` with the budget a user would give it; the fold's
    figures per trained configuration."""
    import torch

    from autoseg.paths import results_dir
    from autoseg.pipeline import plan_and_train
    from autoseg.planning.plan import load_plan
    from benchmarks.accuracy_cv import fold_epochs, fold_scores

    torch.set_num_threads(ctx.threads)
    t0 = time.perf_counter()
    result = plan_and_train(
        ctx.folder,
        ctx.root,
        folds=str(fold),
        n_folds=N_FOLDS,
        time_budget_s=ctx.fold_budget_s * N_FOLDS,
        device="cpu",
        num_workers=ctx.workers,
        progress=True,
    )
    wall = time.perf_counter() - t0
    plan = load_plan(result.plan_path)
    results = results_dir(ctx.root) / ctx.folder
    configs = {}
    for config in result.trained:
        rows = fold_scores(results, config, [fold])
        cfg = plan.configurations[config]
        schedule = cfg.schedule or plan.schedule
        epochs = fold_epochs(results, config, fold)
        log_path = ResultsLayout(results).training_log(config, fold)
        log = json.loads(log_path.read_text()) if log_path.is_file() else []
        configs[config] = {
            **(rows[0] if rows else {}),
            "epochs": epochs,
            "iterations": epochs * schedule.iterations_per_epoch if epochs else None,
            "iterations_per_epoch": schedule.iterations_per_epoch,
            "train_s": sum(float(e.get("epoch_seconds", 0.0)) for e in log),
            "train_budget_s": getattr(cfg.schedule, "train_budget_s", None),
            "patch_size": list(cfg.patch_size),
            "batch_size": cfg.batch_size,
            "features": list(cfg.architecture.get("features_per_stage", [])),
        }
    return {
        "system": "autoseg",
        "fold": fold,
        "wall_s": wall,
        "configs": configs,
        "chosen": result.inference.get("chosen"),
    }


def final_choice(
    ctx: Context, records: Mapping[str, Mapping[int, Mapping[str, Any]]]
) -> str | None:
    """find-best over all measured folds, as ``plan_and_train(folds="all")`` ends, when autoseg
    trained more than one configuration (each fold's call chose on that fold alone)."""
    recs = records.get("autoseg", {})
    trained = {c for r in recs.values() for c in r.get("configs", {})}
    if len(trained) < 2:
        return next(iter(trained), None)
    from autoseg.evaluation.find_best import find_best

    info = find_best(ctx.folder, ctx.root, folds=sorted(recs), num_workers=1, progress=False)
    return info.get("chosen")


def autoseg_row(record: Mapping[str, Any], config: str | None) -> dict[str, Any] | None:
    """The per-fold row of the configuration standing for autoseg."""
    row = record.get("configs", {}).get(config) if config else None
    return dict(row) if row else None


# --------------------------------------------------------------------------- nnU-Net folds
def driver_command(
    ctx: Context,
    fold: int,
    budget_s: float,
    *,
    started_unix: float | None = None,
    validate: bool = True,
) -> list[str]:
    """The ``.venv-bench`` command (``python -m benchmarks.bench_accuracy --nnunet-driver``)
    that trains one fold of ``ctx``'s nnU-Net configuration under ``budget_s`` (counted from
    ``started_unix`` when given, else from ``run_training``'s start) and then, with
    ``validate``, runs nnU-Net's own validation."""
    cmd = module_command(
        BENCH_PYTHON,
        "bench_accuracy",
        DRIVER_FLAG,
        "--dataset",
        ctx.nn_folder,
        "--config",
        ctx.nn_config,
        "--plans",
        ctx.plans_name,
        "--fold",
        str(fold),
        "--budget-s",
        str(budget_s),
        "--threads",
        str(ctx.threads),
    )
    if started_unix is not None:
        cmd += ["--started-unix", repr(float(started_unix))]
    if not validate:
        cmd.append("--no-validation")
    return cmd


def train_nnunet_fold(
    ctx: Context,
    fold: int,
    budget_s: float,
    *,
    count_startup: bool = False,
    validate: bool = True,
    env: Mapping[str, str] | None = None,
) -> tuple[float, Path, dict[str, Any]]:
    """Train (and with ``validate`` validate) one nnU-Net fold in a ``.venv-bench`` process;
    ``(wall seconds of the process, fold folder, the driver's training record)``. A fold whose
    training did not finish is deleted first: its clock must start at zero. With
    ``count_startup`` the budget's clock starts before the process is launched."""
    fdir = ctx.nn_fold_parent / f"fold_{fold}"
    trained = (fdir / TRAINING_RECORD).is_file() and (fdir / "checkpoint_final.pth").is_file()
    if fdir.exists() and not trained:
        shutil.rmtree(fdir)  # an interrupted training restarts: its clock must start at zero
    started = time.time() if count_startup else None
    cmd = driver_command(ctx, fold, budget_s, started_unix=started, validate=validate)
    log = ctx.logs / f"nnunet_fold{fold}.log"
    wall = _run_logged(cmd, checkout_env(env or ctx.nn_env()), log, "nnU-Net fold")
    return wall, fdir, json.loads((fdir / TRAINING_RECORD).read_text())


def nnunet_fold(ctx: Context, fold: int, val_ids: Sequence[str]) -> dict[str, Any]:
    """One nnU-Net fold in a ``.venv-bench`` process under the budget, its validation, and
    its predictions scored with autoseg's metrics."""
    from benchmarks.accuracy_cv import fold_scores

    wall, fdir, training = train_nnunet_fold(ctx, fold, ctx.fold_budget_s)
    validation = json.loads((fdir / VALIDATION_RECORD).read_text())
    write_json(fdir / "validation" / "metrics.json", score_predictions(ctx, fdir, val_ids))
    rows = fold_scores(ctx.nn_fold_parent.parent, ctx.nn_fold_parent.name, [fold])
    summary = json.loads((fdir / "validation" / "summary.json").read_text())
    return {
        "system": "nnunet",
        "fold": fold,
        "wall_s": wall,
        **(rows[0] if rows else {}),
        "summary_dice": summary_dice(summary),
        "iterations": training["iterations"],
        "train_s": training["epoch_loop_s"],
        "training": training,
        "validation_s": validation["validation_s"],
    }


def score_predictions(ctx: Context, fdir: Path, val_ids: Sequence[str]) -> dict[str, Any]:
    """nnU-Net's validation predictions against autoseg's reference files with autoseg's
    ``compute_metrics`` (as ``autoseg.evaluation.validation.validate_fold`` scores its own)."""
    from autoseg.evaluation.metrics import compute_metrics
    from autoseg.io import list_cases, load_dataset_json, read_image
    from autoseg.paths import raw_dir

    raw = raw_dir(ctx.root) / ctx.folder
    ds = load_dataset_json(raw)
    refs = {c.case_id: c.label for c in list_cases(raw, ds)}
    labels = sorted(v for v in ds.labels.values() if v != 0)
    per_case = {}
    for case in val_ids:
        pred = read_image(fdir / "validation" / f"{case}{ds.file_ending}")
        ref = read_image(refs[case])
        per_case[case] = compute_metrics(pred.array, ref.array, ref.geometry.spacing_zyx, labels)
    return autoseg_metrics_document(per_case)


def _budget_trainer_class() -> type:
    """``nnUNetTrainer`` with a wall-clock budget (defined here, in the ``.venv-bench``
    process, because nnunetv2 is importable only there)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
        """nnU-Net's trainer, unchanged but for the schedule's length: a probe epoch times the
        iterations, ``fit_nnunet_schedule`` sets the epochs (and the poly schedule's length)
        to end within ``budget_s``, and training stops hard before an iteration that would
        end past it."""

        budget_s: float = 0.0

        def run_training(self) -> dict[str, Any]:  # type: ignore[override]
            start = time.perf_counter()
            deadline = start + self.budget_s
            self.on_train_start()
            loop_start = time.perf_counter()
            probe_s = PROBE_SHARE * self.budget_s
            it_times: list[float] = []
            val_times: list[float] = []
            iterations, stopped, schedule, probe = 0, False, None, {}
            while self.current_epoch < self.num_epochs and not stopped:
                probing = schedule is None
                epoch_start = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs, epoch_its = [], []
                n_its = NNUNET_ITERATIONS_PER_EPOCH if probing else self.num_iterations_per_epoch
                for i in range(n_its):
                    # stop before an iteration that would end past the budget
                    expected = mean_iteration_s(it_times) if it_times else 0.0
                    if time.perf_counter() + expected > deadline:
                        stopped = True
                        break
                    t = time.perf_counter()
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    epoch_its.append(time.perf_counter() - t)
                    it_times.append(epoch_its[-1])
                    iterations += 1
                    if probing and probe_should_stop(
                        i + 1, time.perf_counter() - epoch_start, probe_s
                    ):
                        break
                if not outputs:
                    break
                self.on_train_epoch_end(outputs)
                if stopped:
                    break
                n_val = val_iterations_for(len(outputs)) if probing else None
                n_val = n_val or self.num_val_iterations_per_epoch
                t_val = time.perf_counter()
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [
                        self.validation_step(next(self.dataloader_val)) for _ in range(n_val)
                    ]
                    self.on_validation_epoch_end(val_outputs)
                val_times.append((time.perf_counter() - t_val) / n_val)
                self.on_epoch_end()
                if probing:
                    epoch_s = time.perf_counter() - epoch_start
                    it_s = mean_iteration_s(epoch_its)
                    val_s = val_times[-1]
                    overhead = max(0.0, epoch_s - sum(epoch_its) - val_s * n_val)
                    schedule = fit_nnunet_schedule(
                        deadline - time.perf_counter(), it_s, val_s, overhead
                    )
                    probe = {
                        "iterations": len(epoch_its),
                        "val_iterations": n_val,
                        "seconds": epoch_s,
                        "iteration_s": it_s,
                        "val_iteration_s": val_s,
                        "overhead_s": overhead,
                    }
                    self.num_epochs = 1 + schedule.epochs
                    self.lr_scheduler.max_steps = self.num_epochs
                    self.num_iterations_per_epoch = max(1, schedule.iterations_per_epoch)
                    self.num_val_iterations_per_epoch = max(1, schedule.val_iterations)
                    self.print_to_log_file(f"budget schedule after the probe epoch: {schedule}")
            loop_s = time.perf_counter() - loop_start
            self.on_train_end()
            return {
                "budget_s": self.budget_s,
                "iterations": iterations,
                "epochs_run": self.current_epoch,
                # None: the budget ended within the probe epoch, before any fit
                "epochs_planned": self.num_epochs if schedule else None,
                "iterations_per_epoch": self.num_iterations_per_epoch if schedule else None,
                "val_iterations_per_epoch": self.num_val_iterations_per_epoch if schedule else None,
                "stopped_by_budget": stopped,
                "probe": probe,
                "iteration_s_mean": mean_iteration_s(it_times) if it_times else None,
                "train_start_s": loop_start - start,
                "epoch_loop_s": loop_s,
                "train_s": time.perf_counter() - start,
                "batch_size": self.configuration_manager.batch_size,
                "patch_size": list(self.configuration_manager.patch_size),
            }

    return nnUNetTrainerBudget


def nnunet_driver(argv: Sequence[str]) -> int:
    """``.venv-bench`` side: train one fold under the budget, then nnU-Net's own validation."""
    parser = argparse.ArgumentParser(prog=f"bench_accuracy.py {DRIVER_FLAG}")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--plans", default=NNUNET_PLANS)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--started-unix", type=float, default=None, help="the budget's start")
    parser.add_argument("--no-validation", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from nnunetv2.paths import nnUNet_preprocessed

    pre = Path(nnUNet_preprocessed) / args.dataset
    plans = json.loads((pre / f"{args.plans}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = _budget_trainer_class()(
        plans, args.config, args.fold, dataset_json, device=torch.device("cpu")
    )
    out = Path(trainer.output_folder)
    final = out / "checkpoint_final.pth"
    if (out / TRAINING_RECORD).is_file() and final.is_file():
        if args.no_validation:
            return 0  # trained earlier, nothing else asked
        trainer.load_checkpoint(str(final))  # training finished earlier: validation only
    else:
        now = time.time()
        trainer.budget_s = budget_left(args.budget_s, args.started_unix, now)
        record = trainer.run_training()
        record["budget_total_s"] = args.budget_s
        # the driver's start-up (imports, the trainer's construction) counted in the budget
        record["startup_s"] = now - args.started_unix if args.started_unix else 0.0
        write_json(out / TRAINING_RECORD, record)
    if args.no_validation:
        return 0
    t0 = time.perf_counter()
    trainer.perform_actual_validation(save_probabilities=False)
    write_json(out / VALIDATION_RECORD, {"validation_s": time.perf_counter() - t0})
    return 0


# --------------------------------------------------------------------------- main
def prepare_context(args: argparse.Namespace) -> Context:
    """Convert (and subset) the dataset, pin this process, and lay out the work folders."""
    from autoseg.io.nnunet import nnunet_folder_name
    from autoseg.planning.schedule import parse_duration
    from benchmarks.accuracy_cv import prepare
    from benchmarks.results import parse_cpus, thread_env

    cpus = parse_cpus(args.cpus)
    os.sched_setaffinity(0, cpus)  # children inherit it
    env = thread_env(dict(os.environ), args.threads, args.workers)
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    label = run_label(args.dataset, args.cases, args.fold_budget)
    work = (args.work or REPO / "autoseg_data" / "bench_accuracy" / label).resolve()
    root = work / "autoseg"
    folder = prepare(args.dataset, root)
    if args.cases:
        folder = make_subset(root, folder, args.cases)
    from autoseg.paths import raw_dir

    nn = work / "nnunet"
    return Context(
        dataset=args.dataset,
        work=work,
        root=root,
        folder=folder,
        nn_dirs={
            "nnUNet_raw": nn / "raw",
            "nnUNet_preprocessed": nn / "preprocessed",
            "nnUNet_results": nn / "results",
        },
        nn_folder=nnunet_folder_name(raw_dir(root) / folder),
        nn_config=args.nnunet_config or DEFAULT_NNUNET_CONFIG[args.dataset],
        fold_budget_s=parse_duration(args.fold_budget),
        threads=args.threads,
        workers=args.workers,
        env=env,
    )


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fold_line(fold: int, system: str, row: Mapping[str, Any] | None) -> str:
    if not row:
        return f"  fold {fold} {system:<8} -"
    return (
        f"  fold {fold} {system:<8} Dice {row.get('dice', float('nan')):.3f}  "
        f"HD95 {row.get('hd95', float('nan')):7.2f} mm  {row.get('iterations')} it  "
        f"epoch loop {row.get('train_s', 0.0):6.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == DRIVER_FLAG:
        return nnunet_driver(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DEFAULT_NNUNET_CONFIG), default="phantom_mri3d")
    parser.add_argument("--fold-budget", default="10m", help="training wall time per fold")
    parser.add_argument("--folds", default="all", help="all, or e.g. 0,1")
    parser.add_argument("--cases", type=int, default=None, help="first N cases only (smoke)")
    parser.add_argument("--cpus", default="1", help="cores for both systems (taskset syntax)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads")
    parser.add_argument("--workers", type=int, default=0, help="augmentation processes")
    parser.add_argument("--nnunet-config", default=None, help="default: 2d or 3d_fullres")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from autoseg.choices import parse_folds
    from benchmarks.accuracy_cv import DATASETS

    if args.dataset not in DATASETS:
        raise SystemExit(f"{args.dataset}: unknown to accuracy_cv.prepare")
    if not BENCH_PYTHON.exists():
        raise SystemExit(f"{BENCH_PYTHON} not found: run benchmarks/make_bench_venv.sh")
    folds = parse_folds(args.folds, N_FOLDS)
    ctx = prepare_context(args)
    print(
        f"{args.dataset}: {ctx.folder}, fold budget {args.fold_budget} "
        f"({ctx.fold_budget_s:.0f} s), folds {folds}, CPUs {sorted(os.sched_getaffinity(0))}, "
        f"{ctx.threads} thread(s), {ctx.workers} worker(s); work {ctx.work}",
        flush=True,
    )
    splits = ensure_splits(ctx.root, ctx.folder)
    setup = setup_nnunet(ctx, splits)
    setup_path = ctx.records / "setup.json"
    write_json(setup_path, {**(_load(setup_path) or {}), **setup})

    records: dict[str, dict[int, dict[str, Any]]] = {"autoseg": {}, "nnunet": {}}
    for fold in folds:
        # alternate fold by fold so that other load on the machine hits both alike
        for system in ("autoseg", "nnunet"):
            path = ctx.records / f"{system}_fold{fold}.json"
            rec = _load(path)
            if rec is None:
                print(f"[fold {fold}] {system} ...", flush=True)
                if system == "autoseg":
                    rec = autoseg_fold(ctx, fold)
                else:
                    rec = nnunet_fold(ctx, fold, splits[fold]["val"])
                write_json(path, rec)
            records[system][fold] = rec

    config = choose_autoseg_config(list(records["autoseg"].values()), final_choice(ctx, records))
    a_rows = {f: row for f, r in records["autoseg"].items() if (row := autoseg_row(r, config))}
    n_rows = dict(records["nnunet"].items())
    title = f"{args.dataset}{f' n{args.cases}' if args.cases else ''} {args.fold_budget}/fold"
    results = build_results(title, a_rows, n_rows)
    print(f"\nautoseg configuration {config}; nnU-Net {ctx.nn_config} (its default plan)")
    for fold in folds:
        print(_fold_line(fold, "autoseg", a_rows.get(fold)))
        print(_fold_line(fold, "nnU-Net", n_rows.get(fold)))
    print()
    print(format_table(results))
    notes = run_notes(ctx, records, config)
    for note in notes:
        print(f"  - {note}")
    out = args.json or REPO / "benchmarks" / "results" / (
        f"accuracy_{run_label(args.dataset, args.cases, args.fold_budget)}.json"
    )
    write_results(
        out,
        "accuracy",
        results,
        notes=notes,
        bench_python=BENCH_PYTHON,
        extra={
            "dataset": args.dataset,
            "cases": args.cases,
            "fold_budget": args.fold_budget,
            "fold_budget_s": ctx.fold_budget_s,
            "autoseg_configuration": config,
            "nnunet_configuration": ctx.nn_config,
            "setup": _load(setup_path),
            "folds": {s: {str(f): r for f, r in recs.items()} for s, recs in records.items()},
        },
    )
    print(f"written {out}")
    return 0


def describe_nnunet_training(t: Mapping[str, Any]) -> str:
    """One line on how an nnU-Net fold spent its budget (from the driver's record)."""
    p = t.get("probe") or {}
    size = f"patch {t.get('patch_size')} batch {t.get('batch_size')}"
    stop = " (stopped by the budget)" if t.get("stopped_by_budget") else ""
    if not p:
        return (
            f"the budget ended within the probe epoch after {t.get('iterations')} iteration(s) "
            f"at {t.get('iteration_s_mean') or float('nan'):.1f} s/it (an iteration cannot be "
            f"cut short); {size}"
        )
    return (
        f"probe {p.get('iterations')} it at {p.get('iteration_s', float('nan')):.2f} s/it, then "
        f"{t.get('epochs_planned')} epochs planned x {t.get('iterations_per_epoch')} it, "
        f"{t.get('epochs_run')} completed{stop}; {t.get('iterations')} it in all; {size}"
    )


def run_notes(
    ctx: Context, records: Mapping[str, Mapping[int, Mapping[str, Any]]], config: str | None
) -> list[str]:
    """What was not equal, in words, with this run's numbers."""
    notes = [
        f"equal wall-clock training budget per fold: {ctx.fold_budget_s:.0f} s; autoseg got "
        f"plan_and_train(time_budget_s={ctx.fold_budget_s * N_FOLDS:.0f}) (its planner keeps "
        "back start-up, 5 % for noise and its validation estimate from each fold's share, and "
        "splits it between all planned configurations); nnU-Net's clock runs from "
        "run_training's start and stops hard at the budget",
        "planning, preprocessing and end-of-fold validation are outside both budgets; "
        "validation as each ships it on a CPU: nnU-Net sliding window with mirroring, "
        "time-budgeted autoseg without mirroring",
        f"nnU-Net: its default plan ({NNUNET_PLANS}, {ctx.nn_config}), unchanged; epochs fitted "
        f"after a probe epoch ({NNUNET_ITERATIONS_PER_EPOCH} iterations per epoch when one "
        f"fits, else fewer over up to {SHORT_SCHEDULE_EPOCHS} epochs)",
        "Dice and HD95 of both from autoseg's compute_metrics over the validation cases "
        "(mean over labels per case, then over cases; Dice of a label absent from both = 1, "
        "HD95 with one mask empty = the image diagonal); nnU-Net's own summary.json Dice "
        "in the Dice row's note",
        f"both pinned to CPUs {sorted(os.sched_getaffinity(0))}, {ctx.threads} torch thread(s), "
        f"{ctx.workers} augmentation worker(s); folds alternate autoseg, nnU-Net per fold",
    ]
    a = records.get("autoseg", {})
    trained = sorted({c for r in a.values() for c in r.get("configs", {})})
    if trained:
        notes.append(
            f"autoseg trained {', '.join(trained)}; figures are of {config} "
            "(find-best's choice, or the best single configuration when it chose an ensemble)"
        )
    for f, r in sorted(records.get("nnunet", {}).items()):
        notes.append(f"nnU-Net fold {f}: {describe_nnunet_training(r.get('training', {}))}")
    for f, r in sorted(a.items()):
        row = r.get("configs", {}).get(config or "", {})
        if row:
            notes.append(
                f"autoseg fold {f} ({config}): {row.get('epochs')} epochs x "
                f"{row.get('iterations_per_epoch')} it, epoch-loop budget "
                f"{row.get('train_budget_s')} s; patch {row.get('patch_size')} batch "
                f"{row.get('batch_size')} features {row.get('features')}"
            )
    return notes


if __name__ == "__main__":
    sys.exit(main())
