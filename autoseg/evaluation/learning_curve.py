"""``autoseg learning-curve``: how Dice grows with the number of labelled training subjects.

One configuration of a planned dataset is trained on nested subsets of the training subjects
and each model is scored on the same held-out subjects; a power law of the error in the number
of subjects (:mod:`autoseg.evaluation.power_law`) then says how many more subjects a target
Dice needs, or that more labels of this kind will not help.

The rules, with their numbers:

- **Held out**: the validation cases of one fold of the dataset's ``splits.json`` (fold 0 by
  default; the file is created as ``autoseg train`` creates it when missing), so the held-out
  subjects are grouped and stratified exactly as the cross-validation is, and are the same for
  every subset. The other folds' subjects are the training pool.
- **Nested subsets of subjects**, not frames: for each seed the pool's subjects are put in one
  random order, stratified by cohort (:func:`nested_order`), and a fraction ``f`` trains on the
  first ``round(f·N)`` subjects (at least 1) with all their cases; so each subset lies within
  the next, and for ``f = 1`` the seeds differ only in the training's randomness (the training
  seed is the run's seed).
- **Equal budgets**: ``--time-budget`` is the whole command's, split evenly over the runs,
  ``--run-budget`` is one run's; :data:`EPOCH_LOOP_SHARE` of it goes to the epoch loop, whose
  epochs the trainer refits to it as for any time-budgeted fold, and the rest to start-up and the
  held-out evaluation. A resumed command gives each remaining run the same share (not what is
  left), so that every point had the same training time. Without either, a time-budget plan's
  per-fold ``train_budget_s``; otherwise the plan's schedule (or ``--epochs``).
- **Resumable**: a run whose folder holds ``heldout.json`` is skipped; an interrupted run
  resumes from its last epoch; a trained but unscored one is only scored. ``run.json`` records
  each run's subjects and held-out cases, and a rerun whose design differs (the dataset or
  ``splits.json`` changed) stops with one line instead of mixing two designs.
- **Crop configurations** are refused: their prediction needs a localiser trained on the same
  subset.

Results: ``results/<dataset>/learning_curve/<config>/`` holds one folder per run
(``n<N>_s<seed>/``: the trainer's checkpoints and log, ``run.json``, ``heldout.json``), and
``learning_curve.json``, ``learning_curve.png`` and ``learning_curve.log`` (the table).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError, failure_context
from autoseg.evaluation.power_law import CONFIDENCE, answer, fit_power_law, refusal
from autoseg.io.atomic import atomic_path, json_safe, write_json_atomic
from autoseg.layout import FINAL, TRAINING_LOG, ResultsLayout

RESULT_FILE = "learning_curve.json"
FIGURE_FILE = "learning_curve.png"
LOG_FILE = "learning_curve.log"
RUN_FILE = "run.json"
HELDOUT_FILE = "heldout.json"
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
DEFAULT_SEEDS = 2
EPOCH_LOOP_SHARE = 0.85
"""Share of a run's budget for the epoch loop, as plan-and-train gives a fold
(``autoseg.pipeline.EPOCH_LOOP_SHARE``); the rest covers building the network and scoring the
held-out cases (usgra-seg on one core: 40 frames in 10-20 s)."""
ORDER_SEED = 1717
"""Mixed with the run's seed into the subject order, so that seed 0 does not reuse the
cross-validation's shuffle."""
MEAN = "mean"


# ------------------------------------------------------------------------------ the design
def subset_size(fraction: float, n_subjects: int) -> int:
    """Subjects in a subset of ``fraction`` of the pool: rounded half up, at least 1."""
    return min(n_subjects, max(1, math.floor(fraction * n_subjects + 0.5)))


def nested_order(subjects: Sequence[str], strata: Mapping[str, str | None], seed: int) -> list[str]:
    """The pool's subjects in the order subsets take them: shuffled within each stratum
    (cohort) by ``seed``, then interleaved so that every prefix holds each stratum within one
    subject of its share (at step k the stratum furthest below ``k·share`` goes next)."""
    rng = np.random.default_rng([ORDER_SEED, int(seed)])
    groups: dict[str, list[str]] = {}
    for s in sorted(set(subjects)):
        groups.setdefault(str(strata.get(s)), []).append(s)
    keys = sorted(groups)
    for k in keys:
        groups[k] = [groups[k][i] for i in rng.permutation(len(groups[k]))]
    total = sum(len(g) for g in groups.values())
    taken = dict.fromkeys(keys, 0)
    order = []
    for step in range(1, total + 1):
        open_keys = [k for k in keys if taken[k] < len(groups[k])]
        k = max(open_keys, key=lambda k: step * len(groups[k]) / total - taken[k])
        order.append(groups[k][taken[k]])
        taken[k] += 1
    return order


@dataclass(frozen=True)
class Run:
    """One model of the curve: ``n`` training subjects of seed ``seed``'s order."""

    n: int
    seed: int
    fractions: tuple[float, ...]
    subjects: tuple[str, ...]
    cases: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"n{self.n}_s{self.seed}"


def design_runs(
    pool_cases: Sequence[str],
    subject_of: Callable[[str], str],
    cohort_of: Callable[[str], str | None],
    fractions: Sequence[float],
    seeds: int,
) -> list[Run]:
    """Every (size, seed) run, smallest size first; fractions giving the same size share it."""
    cases_of: dict[str, list[str]] = {}
    for c in sorted(pool_cases):
        cases_of.setdefault(subject_of(c), []).append(c)
    strata = {s: cohort_of(cs[0]) for s, cs in cases_of.items()}
    n_pool = len(cases_of)
    sizes: dict[int, list[float]] = {}
    for f in fractions:
        sizes.setdefault(subset_size(f, n_pool), []).append(float(f))
    runs = []
    orders = {seed: nested_order(list(cases_of), strata, seed) for seed in range(seeds)}
    for n in sorted(sizes):
        for seed in range(seeds):
            chosen = orders[seed][:n]
            cases = sorted(c for s in chosen for c in cases_of[s])
            runs.append(Run(n, seed, tuple(sizes[n]), tuple(sorted(chosen)), tuple(cases)))
    return runs


def check_arguments(
    fractions: Sequence[float],
    seeds: int,
    time_budget_s: float | None,
    run_budget_s: float | None,
    target: float | None,
) -> None:
    """One line for each mistake a user can make on the command line."""
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise AutosegError(
            f"fractions {list(fractions)} must lie in (0, 1]", fix="e.g. --fractions 0.25 0.5 1"
        )
    if seeds < 1:
        raise AutosegError(f"{seeds} seeds train nothing", fix="use --seeds 1 or more")
    if time_budget_s is not None and run_budget_s is not None:
        raise AutosegError(
            "--time-budget (the whole command) and --run-budget (each run) both given",
            fix="give one of them",
        )
    if target is not None and not 0 < target < 1:
        raise AutosegError(f"target Dice {target} must lie in (0, 1)", fix="e.g. --target 0.85")


def choose_config(plan: Any, results: Path, config: str | None) -> str:
    """``config``, else find-best's first chosen configuration, else the plan's first; never
    a crop configuration (its localiser would have to be trained on the same subset)."""
    if config is None:
        chosen: list[str] = []
        inference = ResultsLayout(results).inference
        if inference.is_file():
            info = json.loads(inference.read_text(encoding="utf-8"))
            chosen = [str(c) for c in info.get("configurations", [])]
        candidates = [c for c in [*chosen, *plan.configurations] if c in plan.configurations]
        usable = [c for c in candidates if plan.configurations[c].crop is None]
        if not usable:
            raise AutosegError(
                "the plan has only crop configurations", fix="re-plan with a 2d or 3d one"
            )
        return usable[0]
    if config not in plan.configurations:
        raise AutosegError(
            f"configuration {config!r} is not in the plan ({', '.join(plan.configurations)})",
            fix="pick one of those with --config",
        )
    if plan.configurations[config].crop is not None:
        raise AutosegError(
            f"{config} is a crop configuration: its localiser would have to be trained on each "
            "subset too",
            fix=f"use --config {plan.configurations[config].crop.localiser} or another one",
        )
    return config


def run_budget(
    time_budget_s: float | None,
    run_budget_s: float | None,
    n_runs: int,
    plan_fold_loop_s: float | None,
    epochs_given: bool,
) -> tuple[float | None, float | None, str]:
    """(run budget, its epoch loop's budget, one line saying which rule gave them)."""
    from autoseg.progress import format_seconds as fs

    if time_budget_s is not None:
        run_s = float(time_budget_s) / n_runs
        loop = EPOCH_LOOP_SHARE * run_s
        return (
            run_s,
            loop,
            f"time budget {fs(time_budget_s)} split evenly over {n_runs} runs: {fs(run_s)} "
            f"each, {fs(loop)} of it for the epochs (the rest: start-up and scoring)",
        )
    if run_budget_s is not None:
        loop = EPOCH_LOOP_SHARE * float(run_budget_s)
        return (
            float(run_budget_s),
            loop,
            f"run budget {fs(run_budget_s)} for each of {n_runs} runs "
            f"({fs(run_budget_s * n_runs)} in all), {fs(loop)} of it for the epochs",
        )
    if plan_fold_loop_s and not epochs_given:
        return (
            None,
            float(plan_fold_loop_s),
            f"each run's epochs get what one fold's got in the plan: {fs(plan_fold_loop_s)} "
            f"({n_runs} runs)",
        )
    return None, None, f"no time budget: each of the {n_runs} runs trains the plan's schedule"


# ------------------------------------------------------------------------------ one run
def _design_record(run: Run, holdout: Sequence[str], config: str) -> dict[str, Any]:
    return {
        "config": config,
        "n_subjects": run.n,
        "seed": run.seed,
        "subjects": list(run.subjects),
        "train_cases": list(run.cases),
        "holdout_cases": list(holdout),
    }


def check_run_design(folder: Path, record: Mapping[str, Any]) -> None:
    """Write ``run.json`` for a new run; for an existing one, refuse a different design."""
    path = folder / RUN_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != dict(record):
            raise AutosegError(
                f"{folder.name} was trained on other subjects or held out other cases (the "
                "dataset or splits.json changed since)",
                path=folder,
                fix=f"delete {folder.parent} to start again",
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, dict(record))


def run_predictor(
    plan: Any, config: str, checkpoint: Path, *, device: str = "auto", tta: bool | None = None
) -> Any:
    """A :class:`~autoseg.inference.predictor.Predictor` of one run's checkpoint (not a fold
    of ``results/``). ``tta=None``: mirroring as the out-of-fold validation does it (always,
    unless a time-budget plan's device makes it too slow; see
    ``autoseg.planning.budget.validation_mirroring``)."""
    from autoseg.inference.predictor import FoldModel, Predictor
    from autoseg.networks import build_network
    from autoseg.networks.checkpoint import load_checkpoint
    from autoseg.networks.device import pick_device
    from autoseg.planning.budget import validation_mirroring

    dev = pick_device(device)
    state = load_checkpoint(checkpoint, map_location="cpu")
    net = build_network(json.loads(state["arch"]))
    net.load_state_dict(state["model"])
    if tta is None:
        tta = plan.schedule.source != "time_budget" or validation_mirroring(plan.device.type)
    model = FoldModel(config, 0, net.to(dev).eval())
    return Predictor(plan, {config: [model]}, device=dev, tta=tta)


def score_holdout(
    plan: Any,
    config: str,
    checkpoint: Path,
    cases: Sequence[Any],
    labels: Sequence[int],
    *,
    device: str = "auto",
    progress: bool = True,
    desc: str = "score",
) -> dict[str, dict[str, float]]:
    """Dice per label of each held-out case, predicted by one checkpoint with the same code
    path as the out-of-fold validation (sliding window, the plan's mirroring rule, inversion
    to the case's own geometry)."""
    from autoseg.evaluation.metrics import compute_metrics
    from autoseg.io import read_image
    from autoseg.preprocessing.preprocess import read_case
    from autoseg.progress import progress_bar

    predictor = run_predictor(plan, config, checkpoint, device=device)
    out: dict[str, dict[str, float]] = {}
    for case in progress_bar(cases, desc=desc, unit="case", disable=not progress):
        with failure_context(desc, case.case_id):
            image, geometry, _ = read_case(case.images)
            seg, _, _ = predictor.predict(image, geometry)
            ref = read_image(case.label)
            metrics = compute_metrics(seg, ref.array, ref.geometry.spacing_zyx, labels)
        out[case.case_id] = {str(lab): float(metrics[lab]["dice"]) for lab in labels}
    return out


def run_scores(per_case: Mapping[str, Mapping[str, float]], labels: Sequence[int]) -> dict:
    """Per label the mean Dice over the held-out cases, and their mean over labels."""
    dice = {str(lab): float(np.nanmean([c[str(lab)] for c in per_case.values()])) for lab in labels}
    return {"dice": dice, "mean_dice": float(np.mean(list(dice.values())))}


@dataclass
class HeldOut:
    """A planned dataset split for measuring models trained on subsets: the held-out cases
    (one fold's validation cases) and the training pool (that fold's training cases), with
    what training and scoring a run needs."""

    name: str  # the dataset's folder name
    plan: Any
    config: str
    ds: Any  # its DatasetJson
    cases: dict[str, Any]  # case id -> io.Case
    fold: int
    holdout: list[str]
    pool: list[str]
    layout: ResultsLayout
    data_dir: Path  # the configuration's preprocessed data
    labels: dict[str, str]  # label value (str) -> name, background left out
    setup: Any  # training.run.TrainSetup

    @property
    def label_ids(self) -> list[int]:
        return sorted(int(v) for v in self.labels)


def prepare_holdout(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    config: str | None = None,
    holdout_fold: int = 0,
    n_folds: int = 5,
    progress: bool = True,
) -> HeldOut:
    """Load the plan, choose the configuration (:func:`choose_config`), read or create
    ``splits.json`` and preprocess the configuration's data if that is missing, as ``autoseg
    train`` does. One-line errors for an unplanned dataset and a fold not in the splits."""
    from autoseg.io import list_cases, load_dataset_json
    from autoseg.paths import preprocessed_dir, resolve_dataset, results_dir
    from autoseg.planning.plan import load_plan
    from autoseg.preprocessing.preprocess import data_identifier, preprocess_dataset
    from autoseg.training.run import setup_from_plan
    from autoseg.training.splits import load_or_create_splits

    raw = resolve_dataset(dataset, root)
    plan_path = preprocessed_dir(root) / raw.name / "plans.json"
    if not plan_path.is_file():
        raise AutosegError(
            f"{raw.name} is not planned yet",
            path=plan_path,
            fix=f"run autoseg plan-and-train {raw.name} (or autoseg plan and autoseg "
            "preprocess) first",
        )
    plan = load_plan(plan_path.parent)
    results = results_dir(root) / raw.name
    layout = ResultsLayout(results)
    config = choose_config(plan, results, config)
    ds = load_dataset_json(raw)
    cases = {c.case_id: c for c in list_cases(raw, ds)}
    ids = list(cases)
    subjects = [ds.subject_of(c) for c in ids]
    splits = load_or_create_splits(
        layout.splits, ids, subjects, [ds.cohort_of(c) for c in ids], n_folds=n_folds
    )
    if not 0 <= holdout_fold < len(splits):
        raise AutosegError(
            f"fold {holdout_fold} is not in splits.json ({len(splits)} folds)",
            path=layout.splits,
            fix=f"use --holdout-fold 0 to {len(splits) - 1}",
        )
    data_dir = preprocessed_dir(root) / raw.name / data_identifier(plan, config)
    if not (data_dir / "manifest.json").is_file():
        preprocess_dataset(raw, root, configs=[config], progress=progress)
    return HeldOut(
        name=raw.name,
        plan=plan,
        config=config,
        ds=ds,
        cases=cases,
        fold=holdout_fold,
        holdout=list(splits[holdout_fold]["val"]),
        pool=list(splits[holdout_fold]["train"]),
        layout=layout,
        data_dir=data_dir,
        labels={str(v): k for k, v in plan.labels.items() if v != 0},
        setup=setup_from_plan(plan, config, data_dir),
    )


def train_and_score(
    held: HeldOut,
    train_cases: Sequence[str],
    folder: Path,
    design: Mapping[str, Any],
    *,
    seed: int,
    epoch_budget_s: float | None = None,
    epochs: int | None = None,
    iterations: int | None = None,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    say: Callable[[str], None] = print,
    where: str = "",
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """One model: train ``held.config`` on ``train_cases`` into ``folder`` (seed ``seed``,
    its epochs refitted to ``epoch_budget_s`` when given) and score it on the held-out cases;
    returns (the record written to ``folder/heldout.json``, whether it was there already).

    Resumable: ``design`` (the run's subjects/cases, as ``run.json``) must match an existing
    folder's; a folder with ``heldout.json`` is not touched again, an interrupted training
    resumes from its last epoch, a trained but unscored model is only scored. ``extra`` goes
    into the record first (the caller's names for the run); ``say`` gets one line per step,
    each starting with ``where``."""
    from autoseg.progress import format_seconds
    from autoseg.training.run import EpochLines, options_from_plan
    from autoseg.training.trainer import LATEST, TRAINERS

    holdout = held.holdout
    if not set(train_cases).isdisjoint(holdout):
        raise ValueError(f"{folder.name}: training cases overlap the held-out cases")
    scored = folder / HELDOUT_FILE
    check_run_design(folder, design)
    if scored.is_file():
        record = json.loads(scored.read_text(encoding="utf-8"))
        say(f"{where}: done before, Dice {record['mean_dice']:.3f}")
        return record, True
    started = time.monotonic()
    if not (folder / FINAL).is_file():
        options = options_from_plan(
            held.plan,
            held.config,
            epochs=epochs,
            iterations_per_epoch=iterations,
            device=device,
            num_workers=num_workers,
            seed=seed,
        )
        options.progress = progress
        options.time_budget_s = epoch_budget_s
        resumed = (folder / LATEST).is_file()
        say(f"{where}: {'resuming' if resumed else 'training'}")
        trainer = TRAINERS.get(held.setup.trainer)(
            held.setup, options, list(train_cases), list(holdout), folder, fold=0
        )
        lines = EpochLines.attach(trainer) if progress else None
        with failure_context(f"{held.config} {folder.name}"):
            trainer.fit(resume=True)
        if lines is not None:
            lines.flush()
    per_case = score_holdout(
        held.plan,
        held.config,
        folder / FINAL,
        [held.cases[c] for c in holdout],
        held.label_ids,
        device=device,
        progress=progress,
        desc=f"score {folder.name}",
    )
    log = json.loads((folder / TRAINING_LOG).read_text(encoding="utf-8"))
    record = {
        **(extra or {}),
        "n_cases": len(train_cases),
        "epochs": len(log),
        "train_s": float(sum(e.get("epoch_seconds", 0.0) for e in log)),
        "epoch_budget_s": epoch_budget_s,
        "seconds": time.monotonic() - started,
        **run_scores(per_case, held.label_ids),
        "cases": per_case,
    }
    write_json_atomic(scored, json_safe(record))
    say(
        f"{where}: Dice {record['mean_dice']:.3f} after {record['epochs']} epochs, "
        f"{format_seconds(record['seconds'])}"
    )
    return record, False


# ------------------------------------------------------------------------------ the curve
def summarise(
    runs: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
    *,
    target: float | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Per size the spread over seeds, a power-law fit per label and for the mean over labels,
    and the answer for the mean. ``runs``: ``{"n_subjects", "dice", "mean_dice", ...}``."""
    keys = [MEAN, *labels]

    def value(r: Mapping[str, Any], key: str) -> float:
        return float(r["mean_dice"] if key == MEAN else r["dice"][key])

    sizes = []
    for n in sorted({int(r["n_subjects"]) for r in runs}):
        at = [r for r in runs if int(r["n_subjects"]) == n]
        entry: dict[str, Any] = {"n_subjects": n, "runs": len(at)}
        for key in keys:
            v = [value(r, key) for r in at]
            entry[key] = {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v))}
        sizes.append(entry)
    fits: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    n_max = max((int(r["n_subjects"]) for r in runs), default=0)
    for key in keys:
        n = [int(r["n_subjects"]) for r in runs]
        d = [value(r, key) for r in runs]
        why = refusal(n, d)
        fit = None if why is not None else fit_power_law(n, d, confidence)
        fits[key] = {"refused": why} if fit is None else fit.to_dict()
        current = sizes[-1][key]["mean"] if sizes else float("nan")
        answers[key] = answer(fit, n_max, current, target, reason=why).to_dict()
    return {"sizes": sizes, "fits": fits, "answers": answers, "answer": answers[MEAN]}


def format_table(result: Mapping[str, Any]) -> str:
    """The terminal's (and the log's) view of ``learning_curve.json``."""
    from autoseg.progress import format_seconds

    labels: dict[str, str] = result["labels"]
    keys = [MEAN, *labels]
    names = {MEAN: "mean", **labels}
    head = f"{'subjects':>8}  {'share':>6}  {'seed':>4}  {'epochs':>6}  {'train':>7}"
    head += "".join(f"  {'Dice ' + names[k]:>12}" for k in keys)
    lines = [
        f"learning curve of {result['config']} on {result['dataset']}: "
        f"{len(result['holdout']['cases'])} held-out cases ({result['holdout']['subjects']} "
        f"subjects, fold {result['holdout']['fold']}'s validation), training pool "
        f"{result['pool_subjects']} subjects",
        result["budget"]["rule"],
        "",
        head,
    ]
    for r in result["runs"]:
        share = "/".join(f"{f:.0%}" for f in r["fractions"])
        row = f"{r['n_subjects']:>8}  {share:>6}  {r['seed']:>4}  {r['epochs']:>6}  "
        row += f"{format_seconds(r['train_s']):>7}"
        row += "".join(f"  {(r['mean_dice'] if k == MEAN else r['dice'][k]):>12.3f}" for k in keys)
        lines.append(row)
    lines += ["", "per size, Dice mean over seeds [min–max]:"]
    for s in result["sizes"]:
        cells = "  ".join(
            f"{names[k]} {s[k]['mean']:.3f} [{s[k]['min']:.3f}–{s[k]['max']:.3f}]" for k in keys
        )
        runs = f"{s['runs']} run" + "s" * (s["runs"] != 1)
        lines.append(f"{s['n_subjects']:>8} subjects ({runs}): {cells}")
    pct = round(result["confidence"] * 100)
    lines += ["", f"fit of the error, 1 − Dice = a·n^(−b) ({pct} % band of b):"]
    for k in keys:
        f = result["fits"][k]
        if "refused" in f:
            lines.append(f"{names[k]:>8}: {f['refused']}")
            continue
        lines.append(
            f"{names[k]:>8}: a {f['a']:.3f}, b {f['b']:.3f} ({f['b_low']:.3f} to "
            f"{f['b_high']:.3f}), r² {f['r2']:.2f}, {f['n_points']} points at {f['n_sizes']} "
            "sizes"
        )
    lines += ["", f"answer: {result['answer']['text']}"]
    return "\n".join(lines)


def plot_learning_curve(result: Mapping[str, Any], path: Path) -> None:
    """The measured points (each run, and per size the mean with the seeds' range), the fit
    and its band, and the target, against the training subjects on a log axis; a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from autoseg.evaluation.power_law import PowerLawFit

    fig = Figure(figsize=(7.0, 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    runs = result["runs"]
    ax.scatter(
        [r["n_subjects"] for r in runs],
        [r["mean_dice"] for r in runs],
        s=14,
        color="#9aa4ae",
        label="one run",
        zorder=2,
    )
    sizes = result["sizes"]
    n = np.array([s["n_subjects"] for s in sizes], float)
    mean = np.array([s[MEAN]["mean"] for s in sizes])
    lo = mean - np.array([s[MEAN]["min"] for s in sizes])
    hi = np.array([s[MEAN]["max"] for s in sizes]) - mean
    ax.errorbar(n, mean, yerr=[lo, hi], fmt="o", color="#1d232a", capsize=3, label="mean ± range")
    fit_d = result["fits"][MEAN]
    ans = result["answer"]
    x_max = float(n.max()) * 2 if len(n) else 2.0
    if "refused" not in fit_d:
        fit = PowerLawFit(**fit_d)
        if ans.get("n_needed"):
            x_max = max(x_max, min(float(ans["n_high"] or ans["n_needed"]), 50 * n.max()) * 1.1)
        grid = np.exp(np.linspace(math.log(max(n.min() / 1.3, 0.5)), math.log(x_max), 200))
        band_lo, band_hi = fit.dice_band(grid)
        pct = round(fit.confidence * 100)
        ax.fill_between(grid, band_lo, band_hi, color="#1f6feb", alpha=0.18, label=f"{pct} % band")
        ax.plot(grid, fit.dice(grid), color="#1f6feb", label=f"fit: 1 − {fit.a:.2f}·n^−{fit.b:.2f}")
    if ans.get("target") is not None:
        ax.axhline(
            ans["target"], color="#d1242f", ls="--", lw=1, label=f"target {ans['target']:.3f}"
        )
    if ans.get("kind") == "more" and ans["n_needed"] <= x_max:
        ax.axvline(ans["n_needed"], color="#d1242f", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training subjects (log scale)")
    ax.set_ylabel("held-out Dice, mean over labels")
    ax.set_title(f"{result['dataset']} · {result['config']}", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# ------------------------------------------------------------------------------ the command
def learning_curve(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    config: str | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seeds: int = DEFAULT_SEEDS,
    time_budget_s: float | None = None,
    run_budget_s: float | None = None,
    holdout_fold: int = 0,
    n_folds: int = 5,
    epochs: int | None = None,
    iterations: int | None = None,
    target: float | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and score every run not yet done, fit the curve, write ``learning_curve.json``,
    the PNG and the log; returns what the JSON holds. Needs a plan (``autoseg plan`` or
    ``plan-and-train``); preprocesses the configuration's data if that is missing, as
    ``autoseg train`` does. ``epochs``/``iterations`` override the plan's schedule."""
    check_arguments(fractions, seeds, time_budget_s, run_budget_s, target)
    held = prepare_holdout(
        dataset, root, config=config, holdout_fold=holdout_fold, n_folds=n_folds, progress=progress
    )
    ds, config, holdout = held.ds, held.config, held.holdout
    runs = design_runs(held.pool, ds.subject_of, ds.cohort_of, fractions, seeds)
    pool_subjects = {ds.subject_of(c) for c in held.pool}
    cfg_schedule = getattr(held.plan.configurations[config], "schedule", None)
    run_s, loop_s, rule = run_budget(
        time_budget_s,
        run_budget_s,
        len(runs),
        getattr(cfg_schedule, "train_budget_s", None),
        epochs is not None,
    )
    if num_workers is None:
        from autoseg.data.loader import default_loader_workers
        from autoseg.networks.device import pick_device

        num_workers = default_loader_workers(pick_device(device).type)
    folder = held.layout.learning_curve_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / LOG_FILE
    labels = held.labels

    def say(line: str) -> None:
        if progress:
            print(line, flush=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    say(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} learning-curve {held.name} {config}")
    say(
        f"held out: fold {holdout_fold}'s {len(holdout)} cases; {len(runs)} runs on "
        f"{len(pool_subjects)} training subjects at sizes "
        f"{', '.join(str(n) for n in sorted({r.n for r in runs}))} x {seeds} seed(s)"
    )
    say(rule)
    done: list[dict[str, Any]] = []
    for i, run in enumerate(runs, 1):
        record, _ = train_and_score(
            held,
            run.cases,
            held.layout.learning_curve_run(config, run.n, run.seed),
            _design_record(run, holdout, config),
            seed=run.seed,
            epoch_budget_s=loop_s,
            epochs=epochs,
            iterations=iterations,
            device=device,
            num_workers=num_workers,
            progress=progress,
            say=say,
            where=f"[{i}/{len(runs)}] {run.n} subjects ({len(run.cases)} cases), seed {run.seed}",
            extra={
                "name": run.name,
                "n_subjects": run.n,
                "seed": run.seed,
                "fractions": list(run.fractions),
                "run_budget_s": run_s,
            },
        )
        done.append(record)
    result: dict[str, Any] = {
        "dataset": held.name,
        "config": config,
        "labels": labels,
        "holdout": {
            "fold": holdout_fold,
            "cases": holdout,
            "subjects": len({ds.subject_of(c) for c in holdout}),
        },
        "pool_subjects": len(pool_subjects),
        "fractions": [float(f) for f in fractions],
        "seeds": seeds,
        "budget": {
            "time_budget_s": time_budget_s,
            "run_budget_s": run_s,
            "epoch_budget_s": loop_s,
            "rule": rule,
        },
        "confidence": CONFIDENCE,
        "runs": [{k: v for k, v in r.items() if k != "cases"} for r in done],
    }
    result.update(summarise(result["runs"], labels, target=target))
    write_json_atomic(folder / RESULT_FILE, json_safe(result))
    plot_learning_curve(result, folder / FIGURE_FILE)
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(format_table(result) + "\n")
    return result
