"""nnU-Net v2 beside a finished ``plan-and-train --time-budget B`` run, at the same wall clock.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.nnunet_peer \\
        [--dataset usgra_seg|phantom_mri3d] [--budget 25m] [--autoseg-root DIR] \\
        [--systems peer default] [--cpus 1] [--threads 1] [--workers 0] [--work DIR] \\
        [--json PATH]

Needs a finished autoseg run root (``AUTOSEG_ROOT`` of ``benchmarks/budget_curve.py``: default
``autoseg_data/budget_curve/<dataset>/autoseg_<budget>``) holding ``raw/<ds>``,
``preprocessed/<ds>/plans.json``, ``results/<ds>/{splits.json,inference.json}`` and the run's
``record.json`` (its test scores and wall clock), and ``.venv-bench``
(``benchmarks/make_bench_venv.sh``). Two nnU-Net systems then run, each in its own process
pinned to ``--cpus`` with ``--threads`` torch/OpenMP threads and ``--workers`` augmentation
processes (``nnUNet_n_proc_DA``):

* ``peer`` — the fair peer: autoseg's chosen configuration (``inference.json``; its spacing,
  coarser grid included, patch, batch, network, normalisation, resampling) exported through
  ``nnunet_bridge.prepare_nnunet_dataset`` as nnU-Net plans ``autosegPlans``,
  ``nnUNetv2_preprocess``, then nnU-Net's own trainer on it;
* ``default`` — nnU-Net as it ships: ``nnUNetv2_plan_and_preprocess`` (fingerprint, its
  default plan, preprocessing; ``2d`` for 2D data, ``3d_fullres`` for the phantom), then its
  trainer.

Both train the folds the autoseg run trained (``inference.json``: fold 0 of ``splits.json``
for a one-model plan; the folds go over as ``splits_final.json``) with ``nnUNetTrainerBudget``
(``bench_accuracy.py``: nnU-Net's trainer whose epochs are fitted to the budget after a probe
epoch and which stops hard at it), then ``nnUNetv2_predict`` (fold(s) as trained, nnU-Net's
defaults: Gaussian sliding window, step 0.5, mirroring along every axis its trainer allows; no
post-processing) predicts the held-out test images, which ``budget_curve.score_folder``
scores exactly as it scored autoseg's (Dice per image and label, 1 when a label is absent
from both; nerve failures = images with nerve Dice < 0.5).

**The wall clock.** Each nnU-Net system gets the same B as the autoseg run, counted the same
way: from the converted raw dataset to a trained model. Its clock starts in its pinned
process before the export and counts the export (hard links; the peer's plans), nnU-Net's
preprocessing (``default``: fingerprint and planning too), the training process's start-up
(python, torch and nnunetv2 imports, the trainer's construction: the driver gets the launch
time) and the training itself, which stops at B. The training budget is therefore B minus
what export and preprocessing took (recorded as ``setup``), shared equally between folds
when the autoseg run trained several. Not counted, for either system: process start and
imports before the clock starts, converting the dataset, predicting and scoring the test
images. autoseg's B (``plan-and-train --time-budget``) counts its fingerprint, plan,
preprocessing, training, the validation of its fold and find-best.

**Resumable.** Everything lives under ``--work`` (default ``<root>_nnunet_<budget>`` beside
the autoseg root). A system whose ``<work>/<system>/record.json`` exists is not run again;
within a system, finished set-up (``setup.json``), training (the driver's record and
``checkpoint_final.pth`` per fold) and prediction (``predict.json``) are kept. An interrupted
set-up is redone from scratch (so its seconds are whole); an interrupted fold restarts with
its full share. Results go to ``--json`` (default
``benchmarks/results/nnunet_peer_<dataset>_<budget>.json``, the shared shape of
``benchmarks/results.py``): per system, nerve and vessel test Dice and nerve failures of
autoseg beside nnU-Net's, iterations, and the wall clock of each to a trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks import bench_accuracy as ba
from benchmarks.budget_curve import FAILURE_DICE
from benchmarks.results import (
    DEFAULT_NNUNET_CONFIG,
    REPO,
    Result,
    checkout_env,
    format_table,
    math_threads_env,
    module_command,
    parse_cpus,
    thread_env,
    write_results,
)

BENCH_DIR = REPO / "benchmarks"

SYSTEMS = ("peer", "default")
DATASETS = ("usgra_seg", "phantom_mri3d")
DEFAULT_BUDGET = "25m"
CURVE_WORK = REPO / "autoseg_data" / "budget_curve"  # budget_curve.py's default --work
EXT_TRAINERS = BENCH_DIR / "nnunet_trainers"  # nnUNet_extTrainer: nnUNetTrainerBudget
PEER_PLANS = "autosegPlans"
RUN_FLAG = "--run"
SETUP_RECORD = "setup.json"
PREDICT_RECORD = "predict.json"
RECORD = "record.json"
DESCRIPTIONS = {
    "peer": "nnU-Net's trainer on autoseg's configuration (the fair peer)",
    "default": "nnU-Net's own default plan",
}


# --------------------------------------------------------------------------- pure helpers
def default_autoseg_root(curve_work: Path, dataset: str, budget: str) -> Path:
    """Where ``budget_curve.py`` leaves the plain autoseg run of ``budget``:
    ``<work>/<dataset>/autoseg_<budget>`` (its ``--budgets`` text, as given)."""
    return Path(curve_work) / dataset / f"autoseg_{budget}"


def default_work(autoseg_root: Path, budget: str) -> Path:
    """``<root>_nnunet_<budget>`` beside the autoseg root: the nnU-Net runs of one autoseg run
    and one budget never share a folder with another's."""
    root = Path(autoseg_root)
    return root.with_name(f"{root.name}_nnunet_{ba.budget_label(budget)}")


def peer_configuration(plan: Mapping[str, Any], inference: Mapping[str, Any]) -> tuple[str, str]:
    """``(configuration, why)``: the configuration of the autoseg run the peer trains.

    find-best's choice when it is one configuration nnU-Net can run (a ``unet`` without crop
    or neighbouring slices); when it chose an ensemble, the member nnU-Net can run with the
    best out-of-fold Dice of its own. Raises ``SystemExit`` when none can be exported."""
    from benchmarks.nnunet_bridge import BridgeError, nnunet_plans_from_autoseg

    chosen = list(inference.get("configurations") or [])
    if not chosen:
        raise SystemExit("inference.json names no configuration: did find-best run?")
    problems = {}
    for config in chosen:
        try:
            nnunet_plans_from_autoseg(dict(plan), config, "Dataset000_Check")
        except BridgeError as exc:
            problems[config] = str(exc)
    usable = [c for c in chosen if c not in problems]
    if not usable:
        why = "; ".join(f"{c}: {p}" for c, p in problems.items())
        raise SystemExit(f"no configuration of {inference.get('chosen')} maps to nnU-Net ({why})")
    if len(chosen) == 1:
        return usable[0], f"find-best's choice {chosen[0]}"
    dice = {
        c["name"]: float(c["mean_dice"])
        for c in inference.get("candidates", [])
        if c.get("mean_dice") is not None
    }
    best = max(usable, key=lambda c: (dice.get(c, float("-inf")), -usable.index(c)))
    skipped = "".join(f"; {c} left out: {p}" for c, p in problems.items())
    return best, (
        f"find-best chose the ensemble {inference.get('chosen')}; the peer trains its member "
        f"{best} (best single out-of-fold Dice {dice.get(best)}){skipped}"
    )


def training_budget(budget_s: float, setup_s: float) -> float:
    """Seconds left for training after export and preprocessing took ``setup_s`` (never
    below 0: a set-up longer than the budget leaves an untrained model)."""
    return max(0.0, float(budget_s) - float(setup_s))


def fold_shares(total_s: float, folds: Sequence[int]) -> dict[int, float]:
    """The training seconds of each fold: an equal share of ``total_s`` (autoseg's planner
    splits its budget between folds alike)."""
    if not folds:
        raise ValueError("no folds")
    return {int(f): total_s / len(folds) for f in folds}


CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def nnunet_input_name(name: str) -> str:
    """nnU-Net's input file name for a test image: ``case_0000.nii.gz`` stays, ``case.nii.gz``
    (one channel, e.g. the held-back phantoms) becomes ``case_0000.nii.gz``."""
    from autoseg.io.image import split_extension

    stem, ext = split_extension(name)
    return name if CHANNEL_SUFFIX.search(stem) else f"{stem}_0000{ext}"


def stage_inputs(images: Path, out: Path) -> list[str]:
    """Hard links (copies where links fail) of the test images under nnU-Net's names in
    ``out`` (replaced); returns the case ids (file names without channel and ending)."""
    from autoseg.io.image import split_extension

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cases = []
    for path in sorted(p for p in Path(images).iterdir() if p.is_file()):
        target = out / nnunet_input_name(path.name)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        cases.append(CHANNEL_SUFFIX.sub("", split_extension(target.name)[0]))
    if not cases:
        raise SystemExit(f"{images}: no test images")
    return sorted(set(cases))


def nnunet_plan_summary(nnunet_plans: Mapping[str, Any], config: str) -> dict[str, Any]:
    """What an nnU-Net configuration trains on: spacing, patch, batch, widths, stages."""
    from benchmarks.nnunet_bridge import nnunet_configuration

    cfg = nnunet_configuration(nnunet_plans, config)
    kw = cfg["architecture"]["arch_kwargs"]
    features = kw["features_per_stage"]
    features = [features] * int(kw["n_stages"]) if isinstance(features, int) else features
    return {
        "plans": nnunet_plans.get("plans_name"),
        "configuration": config,
        "spacing": cfg["spacing"],
        "patch": cfg["patch_size"],
        "batch": cfg["batch_size"],
        "features": [features[0], features[-1]],
        "stages": int(kw["n_stages"]),
    }


def paired(
    autoseg_cases: Mapping[str, Mapping[str, float]],
    nnunet_cases: Mapping[str, Mapping[str, float]],
    label: str,
) -> tuple[dict[str, float], dict[str, float]]:
    """One label's per-image Dice of both systems on the images both scored."""
    common = sorted(set(autoseg_cases) & set(nnunet_cases))
    a = {c: float(autoseg_cases[c][label]) for c in common if label in autoseg_cases[c]}
    n = {c: float(nnunet_cases[c][label]) for c in common if label in nnunet_cases[c]}
    return a, n


def build_results(
    title: str, autoseg: Mapping[str, Any], nnunet: Mapping[str, Mapping[str, Any]]
) -> list[Result]:
    """The compared figures, per nnU-Net system: test Dice per label (mean over images, both
    scored by ``score_folder``), nerve failures, training iterations and the wall clock to a
    trained model. ``autoseg``: ``{"test", "iterations", "wall_s"}``; ``nnunet``: per system
    its ``record.json``."""
    names = {"1": "nerve", "2": "vessel"}
    a_test = autoseg["test"]
    rows: list[Result] = []
    for system, rec in nnunet.items():
        tag = f"{title} vs nnU-Net {system}"
        n_test = rec["test"]
        for label in sorted(a_test["mean"]):
            a, n = paired(a_test["cases"], n_test["cases"], label)
            diff = ba.paired_difference(a, n)  # type: ignore[arg-type] (keys: image ids)
            rows.append(
                Result(
                    f"{tag}: {names.get(label, f'label {label}')} Dice (test)",
                    "mean Dice over test images",
                    "Dice",
                    a_test["mean"][label],
                    n_test["mean"].get(label),
                    "higher",
                    1.0,
                    {"autoseg": list(a.values()), "nnunet": list(n.values())},
                    ba.describe_difference(diff, unit="test image"),
                )
            )
        rows.append(
            Result(
                f"{tag}: nerve failures (test)",
                f"images with nerve Dice < {FAILURE_DICE}",
                "images",
                float(a_test["failures"]),
                float(n_test["failures"]),
                "lower",
                1.0,
                note=f"of {a_test['n']} (autoseg) and {n_test['n']} (nnU-Net) test images",
            )
        )
        rows.append(
            Result(
                f"{tag}: training iterations",
                "training iterations, all folds",
                "iterations",
                None if autoseg.get("iterations") is None else float(autoseg["iterations"]),
                float(sum(t["iterations"] for t in rec["training"].values())),
                "higher",
                note="what each system's training managed within the budget",
            )
        )
        rows.append(
            Result(
                f"{tag}: wall clock to a trained model",
                "seconds from the converted dataset to a trained model",
                "s",
                float(autoseg["wall_s"]),
                float(rec["wall_to_model_s"]),
                "lower",
                note=f"both held to the budget of {rec['budget_s']:.0f} s; not a target, shows "
                "both used it",
            )
        )
    return rows


def describe_training(rec: Mapping[str, Any]) -> str:
    """One line on how one nnU-Net system spent its wall clock."""
    setup = rec["setup"]
    parts = ", ".join(
        f"{k[:-2].replace('_', ' ')} {v:.0f} s"
        for k, v in setup.items()
        if k.endswith("_s") and k != "setup_s"
    )
    folds = "; ".join(
        f"fold {f}: {ba.describe_nnunet_training(t)} (start-up {t.get('startup_s', 0.0):.0f} s, "
        f"run_training {t.get('train_s', 0.0):.0f} s of {t.get('budget_s', 0.0):.0f} s left)"
        for f, t in sorted(rec["training"].items())
    )
    plan = rec["plan"]
    return (
        f"nnU-Net {rec['system']} ({plan['plans']} {plan['configuration']}: spacing "
        f"{plan['spacing']}, patch {plan['patch']}, batch {plan['batch']}, features "
        f"{plan['features'][0]}-{plan['features'][1]}, {plan['stages']} stages): set-up "
        f"{setup['setup_s']:.0f} s ({parts}); training budget "
        f"{rec['training_budget_s']:.0f} s; {folds}; whole run "
        f"{rec['wall_to_model_s']:.0f} s of {rec['budget_s']:.0f} s; prediction "
        f"{rec['predict_s']:.0f} s (not counted)"
    )


def run_notes(
    autoseg: Mapping[str, Any], nnunet: Mapping[str, Mapping[str, Any]], cpus: str, threads: int
) -> list[str]:
    """What is equal and what is not, in words, with this run's numbers."""
    from benchmarks.nnunet_bridge import KNOWN_DIFFERENCES

    notes = [
        f"equal: the converted dataset, the training split(s) (autoseg's splits.json, folds "
        f"{autoseg['folds']}, as nnU-Net's splits_final.json), the {autoseg['test']['n']} test "
        "images no training or selection decision saw, the scoring (budget_curve.score_folder: "
        "Dice per image and label, 1 when absent from both; nerve failure = Dice < 0.5), the "
        f"CPUs ({cpus}, {threads} thread(s), each system in its own pinned process) and the "
        f"wall clock from the converted dataset to a trained model, {autoseg['budget_s']:.0f} s",
        "the wall clock counts for autoseg plan-and-train (fingerprint, plan with its timing "
        "steps, preprocessing, training, validation of its fold, find-best); for nnU-Net the "
        "export, nnU-Net's preprocessing (default: its fingerprint and planning too), the "
        "training process's start-up and the training, which stops at the budget; prediction "
        "is outside it for both",
        "not equal: nnU-Net's trainer as it ships (SGD with Nesterov, lr 0.01 poly, deep "
        "supervision, its augmentation and foreground oversampling, float32; epochs of 250 "
        "iterations fitted to the budget after a probe epoch, bench_accuracy.py) against "
        "autoseg's schedule (AdamW for short schedules, bfloat16 where the CPU has it, its "
        "augmentation); nnU-Net validates nothing and applies no post-processing, autoseg's "
        "predict applies find-best's post-processing; nnU-Net mirrors every axis its trainer "
        "allows at inference, autoseg the axes it trained with",
        f"autoseg: {autoseg['why']}; {autoseg['config']} {autoseg['plan']}; "
        f"{autoseg.get('iterations')} training iterations; whole run {autoseg['wall_s']:.0f} s",
    ]
    if "peer" in nnunet:
        notes.append(
            "peer: autoseg's configuration through nnunet_bridge; what the bridge cannot make "
            "identical: " + "; ".join(KNOWN_DIFFERENCES)
        )
    for rec in nnunet.values():
        notes.append(describe_training(rec))
        if rec["budget_s"] != autoseg["budget_s"]:
            notes.append(
                f"NOT a fair comparison: nnU-Net {rec['system']} had {rec['budget_s']:.0f} s, "
                f"the autoseg run {autoseg['budget_s']:.0f} s (a smoke run?)"
            )
    return notes


# --------------------------------------------------------------------------- the autoseg run
def load_autoseg_run(root: Path, dataset: str) -> dict[str, Any]:
    """The finished autoseg run under ``root``: dataset folder, plan, inference choice,
    splits, its ``record.json`` (test scores, wall clock), the chosen configuration and the
    iterations it trained. Exits with what is missing when the run is not finished."""
    from autoseg.paths import dataset_folder_name, preprocessed_dir, raw_dir, results_dir
    from benchmarks.accuracy_cv import DATASETS as CV_DATASETS
    from benchmarks.accuracy_cv import fold_epochs

    folder = dataset_folder_name(*CV_DATASETS[dataset])
    paths = {
        "record": root / RECORD,
        "plan": preprocessed_dir(root) / folder / "plans.json",
        "inference": results_dir(root) / folder / "inference.json",
        "splits": results_dir(root) / folder / "splits.json",
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing or not (raw_dir(root) / folder).is_dir():
        raise SystemExit(
            f"{root}: not a finished autoseg run of {dataset} (missing "
            f"{', '.join(missing) or 'raw'}); run python -m benchmarks.budget_curve --dataset "
            f"{dataset} --budgets B first"
        )
    data = {k: json.loads(p.read_text(encoding="utf-8")) for k, p in paths.items()}
    config, why = peer_configuration(data["plan"], data["inference"])
    folds = [int(f) for f in data["inference"].get("folds") or [0]]
    results = results_dir(root) / folder
    iterations: int | None = 0
    for c in data["inference"]["configurations"]:
        schedule = data["plan"]["configurations"][c].get("schedule") or data["plan"]["schedule"]
        per_epoch = schedule["iterations_per_epoch"]
        for f in folds:
            epochs = fold_epochs(results, c, f)
            if epochs is None or iterations is None:
                iterations = None
            else:
                iterations += epochs * per_epoch
    record = data["record"]
    return {
        "root": root,
        "folder": folder,
        "plan_full": data["plan"],
        "splits": data["splits"],
        "config": config,
        "why": why,
        "folds": folds,
        "iterations": iterations,
        "test": record["test"],
        "wall_s": record["wall_s"],
        "budget": record["budget"],
        "budget_s": record["budget_s"],
        "plan": (record.get("plan") or {}).get(config),
        "estimate": record.get("estimate"),
    }


# --------------------------------------------------------------------------- one system
def system_context(system: str, run: Mapping[str, Any], work: Path, args: argparse.Namespace):
    """bench_accuracy's :class:`~bench_accuracy.Context` for one nnU-Net system: its own
    nnU-Net folders under ``work/<system>/nnunet``, autoseg's converted dataset."""
    from autoseg.io.nnunet import nnunet_folder_name
    from autoseg.paths import raw_dir
    from autoseg.planning.schedule import parse_duration

    nn = work / system / "nnunet"
    peer = system == "peer"
    return ba.Context(
        dataset=args.dataset,
        work=work / system,
        root=run["root"],
        folder=run["folder"],
        nn_dirs={
            "nnUNet_raw": nn / "raw",
            "nnUNet_preprocessed": nn / "preprocessed",
            "nnUNet_results": nn / "results",
        },
        nn_folder=nnunet_folder_name(raw_dir(run["root"]) / run["folder"]),
        nn_config=run["config"] if peer else DEFAULT_NNUNET_CONFIG[args.dataset],
        fold_budget_s=parse_duration(args.budget),
        threads=args.threads,
        workers=args.workers,
        env=thread_env(dict(os.environ), args.threads, args.workers),
        plans_name=PEER_PLANS if peer else ba.NNUNET_PLANS,
    )


def setup_peer(ctx: Any, run: Mapping[str, Any]) -> dict[str, float]:
    """Export with autoseg's configuration as nnU-Net plans, ``nnUNetv2_preprocess``, splits."""
    from autoseg.paths import parse_dataset_folder, raw_dir
    from benchmarks.nnunet_bridge import prepare_nnunet_dataset, write_nnunet_splits

    t0 = time.perf_counter()
    dataset_id = parse_dataset_folder(ctx.folder)[0]
    prepare_nnunet_dataset(
        raw_dir(ctx.root) / ctx.folder,
        ctx.nn_dirs["nnUNet_raw"],
        ctx.nn_dirs["nnUNet_preprocessed"],
        run["plan_full"],
        ctx.nn_config,
        dataset_id,
        plans_name=ctx.plans_name,
    )
    spent = {"export_s": time.perf_counter() - t0}
    cmd = [
        ba.BENCH_PYTHON.parent / "nnUNetv2_preprocess",
        "-d",
        str(dataset_id),
        "-plans_name",
        ctx.plans_name,
        "-c",
        ctx.nn_config,
        "-np",
        "1",
    ]
    spent["preprocess_s"] = ba._run_logged(
        cmd, ctx.nn_env(), ctx.logs / "nnunet_preprocess.log", "nnUNetv2_preprocess"
    )
    pre = ctx.nn_dirs["nnUNet_preprocessed"] / ctx.nn_folder
    write_nnunet_splits(run["splits"], pre / "splits_final.json")
    return spent


def run_system(system: str, run: Mapping[str, Any], work: Path, args: argparse.Namespace) -> dict:
    """In this (pinned) process: set-up, training under the budget, prediction, scores."""
    from autoseg.paths import raw_dir
    from autoseg.planning.schedule import parse_duration
    from benchmarks.budget_curve import held_out_set, score_folder
    from benchmarks.nnunet_bridge import nnunet_plans_from_autoseg  # noqa: F401 (fails early without torch)

    ctx = system_context(system, run, work, args)
    budget_s = parse_duration(args.budget)
    setup_path = ctx.work / SETUP_RECORD
    setup = ba._load(setup_path)
    if setup is None:  # from scratch, so that its seconds are whole
        shutil.rmtree(ctx.work / "nnunet", ignore_errors=True)
        clock = time.perf_counter()
        if system == "peer":
            setup = setup_peer(ctx, run)
        else:
            setup = ba.setup_nnunet(ctx, run["splits"])
        setup["setup_s"] = time.perf_counter() - clock
        ba.write_json(setup_path, setup)
    total = training_budget(budget_s, setup["setup_s"])
    training, walls = {}, {}
    for fold, share in fold_shares(total, run["folds"]).items():
        fdir = ctx.nn_fold_parent / f"fold_{fold}"
        wall_path = fdir / "process_wall.json"  # written last: the fold is finished
        if wall_path.is_file():
            training[fold] = json.loads((fdir / ba.TRAINING_RECORD).read_text())
            walls[fold] = json.loads(wall_path.read_text())["wall_s"]
            continue
        shutil.rmtree(fdir, ignore_errors=True)  # restarts with its full share
        print(f"[{system}] fold {fold}: training budget {share:.0f} s", flush=True)
        walls[fold], _, training[fold] = ba.train_nnunet_fold(
            ctx, fold, share, count_startup=True, validate=False
        )
        ba.write_json(wall_path, {"wall_s": walls[fold]})

    raw = raw_dir(ctx.root) / ctx.folder
    images, masks, labels = held_out_set(args.dataset, raw, ctx.root.parent / "source")
    out = ctx.work / "test_predictions"
    predicted = ba._load(ctx.work / PREDICT_RECORD)
    if predicted is None:
        from benchmarks.bench_inference import nnunet_command

        inputs = ctx.work / "test_inputs"
        stage_inputs(images, inputs)
        shutil.rmtree(out, ignore_errors=True)
        cmd = nnunet_command(
            ba.BENCH_PYTHON,
            inputs,
            out,
            ctx.nn_folder,
            ctx.nn_config,
            run["folds"],
            tta=True,
            device="cpu",
            plans_name=ctx.plans_name,
            trainer=ba.TRAINER_NAME,
        )
        env = {
            **ctx.nn_env(),
            "BENCH_TORCH_THREADS": str(ctx.threads),
            "nnUNet_extTrainer": str(EXT_TRAINERS),
        }
        print(f"[{system}] predicting {images}", flush=True)
        predict_s = ba._run_logged(cmd, env, ctx.logs / "nnunet_predict.log", "nnUNetv2_predict")
        predicted = {"predict_s": predict_s}
        ba.write_json(ctx.work / PREDICT_RECORD, predicted)
    plans_path = ctx.nn_dirs["nnUNet_preprocessed"] / ctx.nn_folder / f"{ctx.plans_name}.json"
    plans = json.loads(plans_path.read_text(encoding="utf-8"))
    return {
        "system": system,
        "dataset": args.dataset,
        "budget": args.budget,
        "budget_s": budget_s,
        "folds": run["folds"],
        "plan": nnunet_plan_summary(plans, ctx.nn_config),
        "setup": setup,
        "training_budget_s": total,
        "training": {str(f): t for f, t in training.items()},
        "train_process_s": {str(f): w for f, w in walls.items()},
        "wall_to_model_s": setup["setup_s"] + sum(walls.values()),
        "predict_s": predicted["predict_s"],
        "test": score_folder(out, masks, labels),
    }


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, default="usgra_seg")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, help="wall clock of each system")
    parser.add_argument("--autoseg-root", type=Path, default=None, help="the autoseg run")
    parser.add_argument("--curve-work", type=Path, default=CURVE_WORK, help="budget_curve --work")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--cpus", default="1", help="cores of each system (taskset syntax)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads")
    parser.add_argument("--workers", type=int, default=0, help="nnU-Net augmentation processes")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(RUN_FLAG, choices=SYSTEMS, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def autoseg_root_of(args: argparse.Namespace) -> Path:
    root = args.autoseg_root or default_autoseg_root(args.curve_work, args.dataset, args.budget)
    return Path(root).resolve()


def child_command(system: str, args: argparse.Namespace, root: Path, work: Path) -> list[str]:
    """The pinned process of one system (``taskset -c CPUS``, the same options)."""
    cmd = module_command(sys.executable, "nnunet_peer", RUN_FLAG, system)
    cmd += ["--dataset", args.dataset, "--budget", args.budget, "--autoseg-root", str(root)]
    cmd += ["--cpus", args.cpus, "--threads", str(args.threads)]
    cmd += ["--workers", str(args.workers), "--work", str(work)]
    return ["taskset", "-c", ",".join(map(str, parse_cpus(args.cpus))), *cmd]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from autoseg.planning.schedule import parse_duration

    root = autoseg_root_of(args)
    run = load_autoseg_run(root, args.dataset)
    work = (args.work or default_work(root, args.budget)).resolve()
    if args.run:  # one system, in this pinned process
        record = run_system(args.run, run, work, args)
        ba.write_json(work / args.run / RECORD, record)
        t = record["test"]
        print(json.dumps({"system": args.run, "test": t["mean"], "failures": t["failures"]}))
        return 0

    if not ba.BENCH_PYTHON.exists():
        raise SystemExit(f"{ba.BENCH_PYTHON} not found: run benchmarks/make_bench_venv.sh")
    budget_s = parse_duration(args.budget)
    if budget_s != run["budget_s"]:
        print(
            f"WARNING: --budget {args.budget} ({budget_s:.0f} s) is not the autoseg run's "
            f"{run['budget']} ({run['budget_s']:.0f} s): not a fair comparison",
            flush=True,
        )
    print(
        f"{args.dataset}: autoseg run {root} ({run['budget']}, {run['config']}, folds "
        f"{run['folds']}); nnU-Net {', '.join(args.systems)} at {args.budget} on CPUs "
        f"{args.cpus}; work {work}",
        flush=True,
    )

    records: dict[str, dict[str, Any]] = {}
    for system in args.systems:
        path = work / system / RECORD
        if not path.is_file():
            cmd = child_command(system, args, root, work)
            log = work / system / "run.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"--- {system}: {' '.join(cmd)} (log {log})", flush=True)
            env = checkout_env(math_threads_env(dict(os.environ), args.threads))
            with open(log, "a", encoding="utf-8") as fh:
                rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                print(f"    {system} failed (exit {rc}); end of {log}:\n{tail}", flush=True)
                continue
        records[system] = json.loads(path.read_text(encoding="utf-8"))
        t = records[system]["test"]
        print(
            f"    nnU-Net {system}: test "
            + ", ".join(f"label {k} {v:.3f}" for k, v in t["mean"].items())
            + f", failures {t['failures']}/{t['n']}",
            flush=True,
        )
    if not records:
        return 1
    title = f"{args.dataset} {args.budget}"
    results = build_results(title, run, records)
    notes = run_notes(run, records, args.cpus, args.threads)
    print()
    print(format_table(results))
    for note in notes:
        print(f"  - {note}")
    out = args.json or BENCH_DIR / "results" / (
        f"nnunet_peer_{args.dataset}_{ba.budget_label(args.budget)}.json"
    )
    write_results(
        out,
        "nnunet_peer",
        results,
        notes=notes,
        bench_python=ba.BENCH_PYTHON,
        extra={
            "dataset": args.dataset,
            "budget": args.budget,
            "budget_s": budget_s,
            "autoseg_root": str(root),
            "autoseg": {
                k: run[k]
                for k in ("config", "why", "folds", "iterations", "wall_s", "budget", "plan")
            }
            | {"test": run["test"], "estimate": run["estimate"]},
            "nnunet": records,
            "descriptions": {s: DESCRIPTIONS[s] for s in records},
        },
    )
    print(f"written {out}")
    return 0 if len(records) == len(args.systems) else 1


if __name__ == "__main__":
    sys.exit(main())
