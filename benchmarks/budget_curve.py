"""What a time budget buys a user: test Dice after ``plan-and-train --time-budget B`` + ``predict``.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.budget_curve \\
        [--dataset usgra_seg phantom_mri3d] [--budgets 5m 10m 25m 60m 120m] \\
        [--no-ablation] [--cpus 1] [--threads 1] [--work DIR] [--json PATH]

Each point is what a user runs, in a process of its own pinned to ``--cpus``: ``autoseg
plan-and-train DATASET --time-budget B`` from a converted dataset with no plan (fingerprint,
plan, preprocess, train, find-best: the wall clock of all of it is recorded and held against
B), then ``autoseg predict`` on images no training or selection decision saw, scored against
their masks:

* ``usgra_seg``: the 40 images of ``../shared/data/usgra_seg/dataset/test`` (``imagesTs`` /
  ``labelsTs`` after ``convert``); nerve Dice, vessel Dice and nerve failures (Dice < 0.5)
  per image, averaged;
* ``phantom_mri3d``: the thigh phantom (20 training cases, ``generate_phantom('mri3d',
  seed=1)``) and 8 held-back cases of other subjects (seed 2); nerve Dice.

Beside each test figure the run's own estimate (``inference.json``: the hold-out or the
cross-validation Dice) is recorded, so the two can be compared. ``--budgets`` beyond
``--max-budget-phantom`` (default 60m) are run on usgra-seg only.

The ablation (unless ``--no-ablation``) adds, at 25 min on usgra-seg, the same run with one
lever of issue 15 turned off at a time, in-process, through the product's own code
(``VARIANTS``): ``five_folds`` (the budget always split over 5-fold cross-validation),
``full_resolution`` (no coarser grid), ``float32`` (no bfloat16), and ``before`` (all of these
off and the ladder stopping at 1000 iterations, as autoseg planned before issue 15).

More variants are run only by hand (``--run D B VARIANT ROOT SOURCE``): ``seed_1`` to
``seed_4`` train every fold with that run seed instead of 0 (the seed spread of a point, plan
and splits unchanged); finished ones are collected beside their default point and drawn as
hollow circles. ``batch_dice`` and ``batch_dice_seed_N`` take per-sample Dice back (batch
Dice on whole 2D frames too), paired by seed with the default and ``seed_N``. ``--plan-file
PLANS`` (with ``--run``) trains a given plan instead of planning — the variant's
``PLAN_EDITS`` applied — so that two variants run side by side share one plan rather than
each timing its own steps on a machine the other makes busy.

``--loss-study B`` adds Desai et al.'s loss study on every dataset at budget B: the default
command with the planner writing ``ce``, ``soft_dice``, ``weighted_ce`` or ``focal`` (gamma 3)
in place of ``dice_ce`` (``LOSS_VARIANTS``; the plain point at B is the ``dice_ce`` row), each
scored as above plus pooled precision and recall per label, which show a bias towards false
positives (Desai et al. found one for weighted cross-entropy).

Resumable: a point whose ``record.json`` exists under ``--work`` (default
``autoseg_data/budget_curve``) is not run again. Results go to ``--json`` (default
``benchmarks/results/budget_curve.json``, the shared shape of ``benchmarks/results.py``; the
nnU-Net column is empty — its comparison is ``bench_accuracy.py``) and a chart of the curves to
``--plot`` (default ``documentation/figures/budget_curve.png``; ``--peers`` adds
``nnunet_peer.py``'s points, ``--plot-only`` redraws from finished points without running any).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks.accuracy_cv import DATASETS, missing_source, prepare
from benchmarks.results import (
    REPO,
    Result,
    checkout_env,
    math_threads_env,
    module_command,
    parse_cpus,
    write_results,
)

BENCH_DIR = REPO / "benchmarks"

DEFAULT_BUDGETS = ("5m", "10m", "25m", "60m", "120m")
ABLATION_BUDGET = "25m"
FAILURE_DICE = 0.5  # a nerve found with Dice below this counts as a failure (issue 15)
PHANTOM_HELD_OUT = 8


# --------------------------------------------------------------------------- the levers
def _five_folds() -> None:
    """The budget always goes to a 5-fold cross-validation (the ladder's target is kept)."""
    from autoseg.planning import budget as bd

    bd.budget_passes = lambda: [
        (bd.N_FOLDS, bd.TARGET_ITERATIONS, False, False),
        (bd.N_FOLDS, bd.MIN_ITERATIONS, False, False),
        (bd.N_FOLDS, bd.MIN_ITERATIONS, True, False),
    ]


def _full_resolution() -> None:
    """No coarser grid: the resolution rule offers no factor."""
    from autoseg.planning import resolution

    resolution.FACTORS = ()


def _float32() -> None:
    """Training and inference in float32 (as on a CPU without bfloat16 in hardware)."""
    from autoseg.networks import precision

    precision.cpu_has_native_bf16 = lambda: False


def _before() -> None:
    """All of the above, and the ladder stops at the first rung reaching 1000 iterations."""
    from autoseg.planning import budget as bd

    _five_folds()
    _full_resolution()
    _float32()
    bd.TARGET_ITERATIONS = bd.MIN_ITERATIONS


def _seed(seed: int) -> Callable[[], None]:
    """Every fold trained with the run seed ``seed`` instead of 0 (the seed spread of a point:
    weights, batches and augmentation drawn anew; plan and splits unchanged)."""

    def apply() -> None:
        from autoseg.training import run

        plan_options = run.options_from_plan

        def options(plan, config=None, **overrides):  # noqa: ANN001, ANN202 (run's shape)
            return plan_options(plan, config, **{**overrides, "seed": seed})

        run.options_from_plan = options

    apply.__doc__ = f"Every fold trained with seed {seed} instead of 0."
    return apply


SEEDS = (1, 2, 3, 4)
SEED_VARIANTS = {f"seed_{s}": _seed(s) for s in SEEDS}


def _batch_dice() -> None:
    """Batch Dice wherever the planner would choose per-sample Dice (whole 2D frames): the
    loss rule is asked as if no patch held a whole case."""
    from autoseg.planning import planner, sampling

    def rule(config: str, whole_case: bool = False):  # noqa: ANN202 (loss_rule's shape)
        return sampling.loss_rule(config, False)

    planner.loss_rule = rule


def _both(*levers: Callable[[], None]) -> Callable[[], None]:
    def apply() -> None:
        for lever in levers:
            lever()

    apply.__doc__ = " ".join(lever.__doc__ or "" for lever in levers)
    return apply


# Per-sample Dice taken back at the default command, paired by seed with autoseg / seed_N.
BATCH_DICE_VARIANTS = {"batch_dice": _batch_dice} | {
    f"batch_dice_{name}": _both(_batch_dice, lever) for name, lever in SEED_VARIANTS.items()
}


def _loss(name: str) -> Callable[[], None]:
    """The planner writes the registered loss ``name`` instead of ``dice_ce`` (everything
    else of the plan, the time budget included, as the default command)."""

    def apply() -> None:
        import dataclasses

        from autoseg.planning import planner, sampling

        def rule(config: str, whole_case: bool = False):  # noqa: ANN202 (loss_rule's shape)
            loss, why = sampling.loss_rule(config, whole_case)
            return dataclasses.replace(loss, name=name), f"{name} (loss study); {why}"

        planner.loss_rule = rule

    apply.__doc__ = f"The loss {name!r} in place of dice_ce (Desai et al.'s loss study)."
    return apply


# A variant's change to a fixed plan (``--plan-file``), where a planner lever has nothing to act
# on: every variant not named here runs the plan as it is (its other levers, the seed, still apply).
def _batch_dice_plan(plan: dict) -> None:
    """Batch Dice in every configuration of the plan (the planner's per-sample choice undone)."""
    for config in plan["configurations"].values():
        config["loss"]["batch_dice"] = True


PLAN_EDITS: dict[str, Callable[[dict], None]] = {
    name: _batch_dice_plan for name in BATCH_DICE_VARIANTS
}


# Desai et al.'s loss study: binary/categorical cross-entropy, soft Dice, weighted
# cross-entropy and focal loss (gamma 3), each beside the default dice_ce at an equal budget.
LOSS_STUDY = ("ce", "soft_dice", "weighted_ce", "focal")
LOSS_VARIANTS = {f"loss_{name}": _loss(name) for name in LOSS_STUDY}
ABLATION = ("five_folds", "full_resolution", "float32", "before")

VARIANTS: dict[str, Callable[[], None]] = {
    "autoseg": lambda: None,
    "five_folds": _five_folds,
    "full_resolution": _full_resolution,
    "float32": _float32,
    "before": _before,
    **LOSS_VARIANTS,
    **SEED_VARIANTS,
    **BATCH_DICE_VARIANTS,
}


# --------------------------------------------------------------------------- scoring
def dice(pred: Any, ref: Any) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    denom = int(pred.sum()) + int(ref.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & ref).sum()) / denom


def score_folder(pred_dir: Path, ref_dir: Path, labels: Sequence[int]) -> dict[str, Any]:
    """Per-case Dice of each label, their means, the label-1 failures (Dice < 0.5) and, pooled
    over all images, each label's precision and recall (a loss biased towards false positives,
    as Desai et al. found weighted cross-entropy, shows as precision below recall)."""
    from autoseg.io import read_image
    from autoseg.io.image import split_extension

    per_case: dict[str, dict[str, float]] = {}
    counts = {str(k): [0, 0, 0] for k in labels}  # true positives, predicted, reference
    for ref_path in sorted(ref_dir.iterdir()):
        stem, ext = split_extension(ref_path.name)
        pred_path = pred_dir / f"{stem}{ext}"
        if not pred_path.is_file():
            raise SystemExit(f"{pred_path}: no prediction for {ref_path.name}")
        pred, ref = read_image(pred_path).array, read_image(ref_path).array
        per_case[stem] = {str(k): dice(pred == k, ref == k) for k in labels}
        for k in labels:
            p, r = pred == k, ref == k
            c = counts[str(k)]
            c[0], c[1], c[2] = c[0] + int((p & r).sum()), c[1] + int(p.sum()), c[2] + int(r.sum())
    means = {str(k): statistics.fmean(c[str(k)] for c in per_case.values()) for k in labels}
    failures = sum(c[str(labels[0])] < FAILURE_DICE for c in per_case.values())
    precision = {k: (tp / n_pred if n_pred else None) for k, (tp, n_pred, _) in counts.items()}
    recall = {k: (tp / n_ref if n_ref else None) for k, (tp, _, n_ref) in counts.items()}
    return {
        "mean": means,
        "failures": failures,
        "n": len(per_case),
        "precision": precision,
        "recall": recall,
        "cases": per_case,
    }


def phantom_held_out(work: Path) -> tuple[Path, Path]:
    """Held-back thigh phantoms (seed 2: other subjects), images and masks in two folders."""
    from autoseg.phantoms import write_held_out

    return write_held_out("mri3d", work / "held_out", PHANTOM_HELD_OUT, 2)


def held_out_set(dataset: str, raw: Path, source: Path) -> tuple[Path, Path, list[int]]:
    """``(images, masks, labels)`` of the images no training or selection decision saw:
    usgra-seg's ``imagesTs`` / ``labelsTs`` of the converted dataset ``raw`` (nerve, vessel);
    for the phantom the held-back cases under ``source`` (nerve)."""
    if dataset == "usgra_seg":
        return raw / "imagesTs", raw / "labelsTs", [1, 2]
    images, masks = phantom_held_out(source)
    return images, masks, [1]


# --------------------------------------------------------------------------- one point
def install_plan(plan_file: Path, variant: str, target: Path) -> None:
    """Write ``plan_file`` (with the variant's :data:`PLAN_EDITS`) as ``target``'s
    ``plans.json``, and the fingerprint beside it, so that ``plan-and-train`` trains that plan
    instead of planning: two variants run from one plan differ only in what the variant
    changes, not in what the planner timed on a busier or quieter machine. Both written
    atomically, the plan last: a run stopped half-way never finds a half-written plan."""
    import shutil

    from autoseg.io.atomic import atomic_path, write_json_atomic

    plan = json.loads(plan_file.read_text())
    PLAN_EDITS.get(variant, lambda p: None)(plan)
    fingerprint = plan_file.parent / "fingerprint.json"
    if fingerprint.is_file():
        with atomic_path(target / "fingerprint.json") as tmp:
            shutil.copyfile(fingerprint, tmp)
    write_json_atomic(target / "plans.json", plan, indent=1)


def run_point(
    dataset: str,
    budget: str,
    variant: str,
    root: Path,
    source: Path,
    plan_file: Path | None = None,
) -> dict:
    """In this process: the variant's lever, ``plan-and-train``, ``predict``, the scores.
    With ``plan_file`` the run trains that plan (:func:`install_plan`) instead of planning."""
    VARIANTS[variant]()
    from autoseg.cli import main as autoseg_main
    from autoseg.paths import preprocessed_dir, raw_dir
    from autoseg.planning.schedule import parse_duration

    folder = prepare(dataset, source)
    raw = raw_dir(root) / folder
    if not raw.exists():
        raw.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(raw_dir(source) / folder, raw)
    planned = preprocessed_dir(root) / folder
    if plan_file is not None and not (planned / "plans.json").is_file():
        install_plan(plan_file, variant, planned)
    os.environ["AUTOSEG_ROOT"] = str(root)
    budget_s = parse_duration(budget)
    started = time.perf_counter()
    rc = autoseg_main(["plan-and-train", folder, "--time-budget", budget])
    wall_s = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"plan-and-train failed (exit {rc})")
    images, masks, labels = held_out_set(dataset, raw, source)
    out = root / "test_predictions"
    rc = autoseg_main(["predict", "-i", str(images), "-o", str(out), "-d", folder])
    if rc != 0:
        raise SystemExit(f"predict failed (exit {rc})")
    scores = score_folder(out, masks, labels)
    inference = json.loads((root / "results" / folder / "inference.json").read_text())
    plan = json.loads((root / "preprocessed" / folder / "plans.json").read_text())
    return {
        "dataset": dataset,
        "budget": budget,
        "budget_s": budget_s,
        "variant": variant,
        "wall_s": round(wall_s, 1),
        "test": scores,
        "estimate": {
            "dice": inference.get("cv_dice"),
            "dice_postprocessed": inference.get("cv_dice_postprocessed"),
            "per_label": inference.get("cv_dice_per_label_postprocessed"),
            "kind": (inference.get("estimate") or {}).get("text"),
        },
        "scale_views": inference.get("scale_views"),  # find-best's trial, before post-processing
        "chosen": inference.get("chosen"),
        "plan": {
            name: {
                "spacing": c["spacing"],
                "patch": c["patch_size"],
                "batch": c["batch_size"],
                "features": [c["architecture"]["features_per_stage"][i] for i in (0, -1)],
                "iterations": c["schedule"]["epochs"] * c["schedule"]["iterations_per_epoch"],
                "optimizer": c["schedule"].get("optimizer"),
            }
            for name, c in plan["configurations"].items()
        },
        "folds": plan["schedule"].get("folds"),
        "plan_file": None if plan_file is None else str(plan_file),
    }


# --------------------------------------------------------------------------- the driver
def points(
    datasets: Sequence[str],
    budgets: Sequence[str],
    phantom_max_s: float,
    ablation: bool,
    loss_budget: str | None = None,
):
    """(dataset, budget, variant) to run, cheapest first; the ablation (usgra-seg at 25 min),
    then with ``loss_budget`` the loss study on every dataset (its default dice_ce point is
    the plain ``autoseg`` one at that budget)."""
    from autoseg.planning.schedule import parse_duration

    out = []
    for b in sorted(budgets, key=parse_duration):
        for d in datasets:
            if d != "usgra_seg" and parse_duration(b) > phantom_max_s:
                continue
            out.append((d, b, "autoseg"))
    if ablation and "usgra_seg" in datasets:
        out += [("usgra_seg", ABLATION_BUDGET, v) for v in ABLATION]
    if loss_budget:
        for d in datasets:
            if (d, loss_budget, "autoseg") not in out:
                out.append((d, loss_budget, "autoseg"))
            out += [(d, loss_budget, v) for v in LOSS_VARIANTS]
    return out


def finished_seed_points(work: Path, todo: Sequence[tuple[str, str, str]]) -> list[tuple]:
    """The ``seed_N`` points (run only by hand) already finished under ``work`` for the default
    points in ``todo``: collected beside them so the figure shows a budget's seed spread."""
    return [
        (d, b, v)
        for d, b, variant in todo
        if variant == "autoseg"
        for v in SEED_VARIANTS
        if (work / d / f"{v}_{b}" / "record.json").is_file()
    ]


def summarize(records: Sequence[dict]) -> list[Result]:
    """One result row per point and figure (autoseg only: nnU-Net is bench_accuracy's)."""
    rows = []
    for r in records:
        tag = f"{r['dataset']} {r['budget']} {r['variant']}"
        means = r["test"]["mean"]
        rows.append(Result(f"{tag}: nerve Dice (test)", "Dice", "", means["1"], None, "higher"))
        if "2" in means:
            rows.append(
                Result(f"{tag}: vessel Dice (test)", "Dice", "", means["2"], None, "higher")
            )
            rows.append(
                Result(
                    f"{tag}: nerve failures (test)",
                    "cases with Dice < 0.5",
                    "cases",
                    float(r["test"]["failures"]),
                    None,
                    "lower",
                )
            )
        rows.append(
            Result(
                f"{tag}: whole run / budget",
                "wall clock share",
                "",
                r["wall_s"] / r["budget_s"],
                None,
                "lower",
                target=None,
                note=f"estimate {r['estimate']['kind']}: {r['estimate']['dice']}",
            )
        )
    return rows


# Issue 15's goal on the usgra-seg test images, drawn as dotted lines.
GOALS = {"usgra_seg": {"nerve": 0.75, "vessel": 0.80}}
LABEL_NAMES = (("1", "nerve"), ("2", "vessel"))


def plot(records: Sequence[dict], path: Path, peers: Sequence[dict] = ()) -> None:
    """Test Dice against the budget (log scale), one line per dataset and label, the hold-out
    estimate dashed, the goals dotted; ablation variants (``x``) and nnU-Net peers (squares,
    ``peers``: nnunet_peer.py's records) as single points at their budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    curves: dict[str, list[tuple[float, float]]] = {}
    singles: list[tuple[str, float, float, str]] = []  # (curve key, minutes, Dice, text)
    seeds: list[tuple[str, float, float]] = []  # (curve key, minutes, Dice) of seed_N runs
    for r in records:
        minutes = r["budget_s"] / 60
        for label, name in LABEL_NAMES:
            if label not in r["test"]["mean"]:
                continue
            key, dice_ = f"{r['dataset']} {name}", r["test"]["mean"][label]
            if r["variant"] == "autoseg":
                curves.setdefault(key, []).append((minutes, dice_))
            elif r["variant"] in SEED_VARIANTS:
                seeds.append((key, minutes, dice_))
            else:
                singles.append((key, minutes, dice_, r["variant"]))
        if r["variant"] == "autoseg" and r["estimate"]["dice"] is not None:
            key = f"{r['dataset']} estimate (hold-out or CV, mean over labels)"
            curves.setdefault(key, []).append((minutes, r["estimate"]["dice"]))
    colors = {}
    for key, pts in sorted(curves.items()):
        pts.sort()
        style = "--" if "estimate" in key else "-"
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=key)
        colors[key] = line.get_color()
    for dataset, goals in GOALS.items():
        for name, goal in goals.items():
            key = f"{dataset} {name}"
            if key in colors:
                ax.axhline(goal, ls=":", lw=1, color=colors[key])
                ax.annotate(
                    f"goal {name} {goal:g}",
                    (0.01, goal),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    color=colors[key],
                    va="bottom",
                )
    for i, (key, minutes, dice_) in enumerate(seeds):
        ax.scatter(
            [minutes],
            [dice_],
            marker="o",
            facecolors="none",
            edgecolors=colors.get(key, "k"),
            zorder=3,
            label=None if i else "the same budget, another run seed",
        )
    for key, minutes, dice_, text in singles:
        ax.scatter([minutes], [dice_], marker="x", color=colors.get(key, "k"), zorder=3)
        ax.annotate(text, (minutes, dice_), fontsize=6, xytext=(4, -3), textcoords="offset points")
    for rec in peers:
        for label, name in LABEL_NAMES:
            key = f"{rec.get('dataset', 'usgra_seg')} {name}"
            if label in rec["test"]["mean"]:
                dice_ = rec["test"]["mean"][label]
                ax.scatter(
                    [rec["budget_s"] / 60],
                    [dice_],
                    marker="s",
                    facecolors="none",
                    edgecolors=colors.get(key, "k"),
                    zorder=3,
                )
                ax.annotate(
                    f"nnU-Net {rec['system']}",
                    (rec["budget_s"] / 60, dice_),
                    fontsize=6,
                    xytext=(-4, 4),
                    textcoords="offset points",
                    ha="right",
                )
    ax.set_xscale("log")
    ticks = sorted({p[0] for pts in curves.values() for p in pts})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("time budget of the whole run (min, one CPU core)")
    ax.set_ylabel("Dice on images no decision saw")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_peers(paths: Sequence[Path]) -> list[dict]:
    """nnU-Net's records from ``nnunet_peer.py`` result files (``extra.nnunet``), each with
    the dataset; files that do not exist are skipped."""
    out = []
    for p in paths:
        if Path(p).is_file():
            doc = json.loads(Path(p).read_text(encoding="utf-8"))
            extra = doc.get("extra", doc)
            for rec in extra.get("nnunet", {}).values():
                out.append({**rec, "dataset": extra.get("dataset", rec.get("dataset"))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["usgra_seg", "phantom_mri3d"])
    parser.add_argument("--budgets", nargs="+", default=list(DEFAULT_BUDGETS))
    parser.add_argument("--max-budget-phantom", default="60m")
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--loss-study",
        metavar="BUDGET",
        default=None,
        help="also Desai et al.'s four losses beside dice_ce on every dataset at BUDGET (e.g. 10m)",
    )
    parser.add_argument("--cpus", default=None, help="taskset list for every point, e.g. 1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=REPO / "autoseg_data" / "budget_curve")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "budget_curve.json")
    parser.add_argument(
        "--plot", type=Path, default=REPO / "documentation" / "figures" / "budget_curve.png"
    )
    parser.add_argument(
        "--peers", nargs="*", type=Path, default=[], help="nnunet_peer.py result files to plot"
    )
    parser.add_argument(
        "--plot-only", action="store_true", help="collect finished points and plot; run none"
    )
    parser.add_argument("--run", nargs=5, metavar=("DATASET", "BUDGET", "VARIANT", "ROOT", "SRC"))
    parser.add_argument(
        "--plan-file",
        type=Path,
        help="with --run: train this plans.json (the variant's plan edits applied) instead of "
        "planning, so that paired variants share one plan",
    )
    args = parser.parse_args(argv)
    if args.plan_file is not None and not args.run:
        parser.error("--plan-file trains one point: give it with --run")
    if args.plan_file is not None and not args.plan_file.is_file():
        parser.error(f"--plan-file {args.plan_file}: no such file (a plans.json to train)")

    if args.run:  # one point, in its own process
        dataset, budget, variant, root, source = args.run
        record = run_point(dataset, budget, variant, Path(root), Path(source), args.plan_file)
        out = Path(root) / "record.json"
        out.write_text(json.dumps(record, indent=1))
        print(json.dumps({k: record[k] for k in ("wall_s", "chosen", "folds")}))
        return 0

    from autoseg.planning.schedule import parse_duration

    work = args.work.resolve()
    datasets = [d for d in args.dataset if d in DATASETS]
    for d in list(datasets):
        if (src := missing_source(d)) is not None:
            print(f"{d}: skipped, {src} not found (the shared data)")
            datasets.remove(d)
    records = []
    todo = points(
        datasets,
        args.budgets,
        parse_duration(args.max_budget_phantom),
        args.ablation,
        args.loss_study,
    )
    todo += finished_seed_points(work, todo)
    for dataset, budget, variant in todo:
        root = work / dataset / f"{variant}_{budget}"
        record_path = root / "record.json"
        if not record_path.is_file() and args.plot_only:
            continue
        if not record_path.is_file():
            root.mkdir(parents=True, exist_ok=True)
            cmd = module_command(sys.executable, "budget_curve", "--run", dataset, budget, variant)
            cmd += [str(root), str(work / dataset / "source")]
            if args.cpus:
                cmd = ["taskset", "-c", ",".join(map(str, parse_cpus(args.cpus))), *cmd]
            env = checkout_env(math_threads_env(dict(os.environ), args.threads))
            print(f"--- {dataset} {budget} {variant}: {' '.join(cmd)}", flush=True)
            with open(root / "run.log", "w") as log:
                proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                print(f"    failed (exit {proc.returncode}): see {root / 'run.log'}")
                continue
        record = json.loads(record_path.read_text())
        records.append(record)
        t = record["test"]
        print(
            f"    {dataset} {budget} {variant}: test "
            + ", ".join(f"label {k} {v:.3f}" for k, v in t["mean"].items())
            + f", failures {t['failures']}/{t['n']}; estimate {record['estimate']['dice']}; "
            f"whole run {record['wall_s'] / 60:.1f} min of {record['budget_s'] / 60:g}",
            flush=True,
        )
    if records:
        write_results(args.json, "budget_curve", summarize(records), extra={"points": records})
        plot(records, args.plot, load_peers(args.peers))
        print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
