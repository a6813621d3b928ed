"""Cross-validated accuracy of autoseg under a per-fold CPU time budget.

    .venv/bin/python -m benchmarks.accuracy_cv DATASET --fold-budget 3m [--configs 3d_fullres]
        [--folds all|0,1] [--root DIR] [--out results.json]

DATASET is one of ``phantom_mri3d`` (20 thigh-MRI phantoms 24x160x160, seed 1),
``phantom_us2d`` (30 wrist-ultrasound phantoms 256x320, seed 1), ``usgra_seg``
(``../shared/data/usgra_seg``: 204 training frames, nerve + vessel) or ``brats2015_subset``
(``../shared/data/brats2015_subset``: 6 cases, FLAIR + T1c, four tumour labels). The dataset is
converted under ``--root`` (default ``./autoseg_data_bench``), then ``plan_and_train`` runs with
``time_budget = fold_budget x n_folds`` (the planner fits patch, batch and schedule to that
budget on this machine, measuring real step times) and the per-fold and pooled out-of-fold
Dice and HD95 are written to ``--out`` and printed as a table. Rerunning continues an
interrupted run (finished folds are skipped).

Pin the run to cores with ``taskset`` and ``OMP_NUM_THREADS`` to keep other work off it; the
figures in ``documentation/benchmarks.md`` say which cores they had.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from autoseg.layout import ResultsLayout
from benchmarks.results import command_line

REPO = Path(__file__).resolve().parents[1]

# The shared data sit beside the checkout (``../shared/data``); AUTOSEG_SHARED_DATA names
# another place, e.g. when running from a git worktree elsewhere.
SHARED = Path(os.environ.get("AUTOSEG_SHARED_DATA") or REPO.parent / "shared" / "data")

DATASETS = {
    "phantom_mri3d": (931, "PhantomMRI3D"),
    "phantom_us2d": (932, "PhantomUS2D"),
    "usgra_seg": (933, "USGRA"),
    "brats2015_subset": (934, "BraTS2015Subset"),
}


# The shared data each real dataset is converted from (../shared/data, see its README).
SOURCES = {
    "usgra_seg": SHARED / "usgra_seg" / "dataset",
    "brats2015_subset": SHARED / "brats2015_subset" / "brats2015TrainingData",
}


def missing_source(name: str) -> Path | None:
    """The shared folder ``name`` is converted from when it is absent (benchmarks skip the
    dataset then); ``None`` for the phantoms, which are generated."""
    src = SOURCES.get(name)
    return src if src is not None and not src.is_dir() else None


def converted(name: str, root: Path) -> Path | None:
    """The raw folder of ``name`` converted under ``root`` (once, by :func:`prepare`); ``None``,
    said on the console, when its shared data is absent (the speed benchmarks skip it then)."""
    from autoseg.paths import raw_dir

    if (missing := missing_source(name)) is not None:
        print(f"{name}: skipped, {missing} not found (the shared data)")
        return None
    return raw_dir(root) / prepare(name, root)


def prepare(name: str, root: Path) -> str:
    """Convert ``name`` under ``root`` once; returns the dataset folder name."""
    from autoseg.io.convert import convert_folder
    from autoseg.paths import dataset_folder_name, raw_dir
    from autoseg.phantoms import generate_phantom

    dataset_id, ds_name = DATASETS[name]
    folder = dataset_folder_name(dataset_id, ds_name)
    if (raw_dir(root) / folder / "dataset.json").is_file():
        return folder
    kwargs: dict = {}
    if name.startswith("phantom_"):
        kind = name.split("_")[1]
        src = root / "source" / kind
        generate_phantom(kind, src, 20 if kind == "mri3d" else 30, seed=1, overwrite=True)
        kwargs = {"label_names": ["nerve"], "channel_names": ["T2" if kind == "mri3d" else "US"]}
    elif name == "usgra_seg":
        src = SOURCES[name]
        kwargs = {"label_names": ["nerve", "vessel"], "channel_names": ["US"]}
    else:
        base = SOURCES[name]
        src = root / "source" / "brats_pairs.csv"
        src.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "image_0000", "image_0001", "mask"])
            for case in sorted(base.glob("*/brats_*")):
                writer.writerow(
                    [
                        case.name,
                        case / "Flair_subtrMeanDivStd.nii.gz",
                        case / "T1c_subtrMeanDivStd.nii.gz",
                        case / "OTMultiClass.nii.gz",
                    ]
                )
        kwargs = {
            "pairs_csv": src,
            "label_names": ["necrosis", "edema", "nonenhancing", "enhancing"],
            "channel_names": ["FLAIR", "T1c"],
        }
        src = src.parent
    if not src.exists():
        raise SystemExit(f"{src}: not found (the shared data is needed for {name})")
    result = convert_folder(src, ds_name, dataset_id, root=root, overwrite=True, **kwargs)
    if not result.ok:
        raise SystemExit(f"{name}: the converted dataset did not verify")
    return folder


def fold_scores(results: Path, config: str, folds: list[int]) -> list[dict]:
    """Mean Dice / HD95 per fold (over validation cases and labels) from each fold's
    ``validation/metrics.json``."""
    rows = []
    for fold in folds:
        path = ResultsLayout(results).validation_metrics(config, fold)
        if not path.is_file():
            continue
        cases = json.loads(path.read_text())["cases"]
        dice, hd95 = [], []
        for metrics in cases.values():
            dice.append(statistics.fmean(m["dice"] for m in metrics.values()))
            hd95.append(statistics.fmean(m["hd95_mm_filled"] for m in metrics.values()))
        rows.append(
            {
                "fold": fold,
                "n_cases": len(cases),
                "dice": statistics.fmean(dice),
                "hd95": statistics.fmean(hd95),
            }
        )
    return rows


def fold_epochs(results: Path, config: str, fold: int) -> int | None:
    """Epochs the fold actually ran (its training log has one entry per epoch)."""
    log = ResultsLayout(results).training_log(config, fold)
    return len(json.loads(log.read_text())) if log.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--fold-budget", default="3m", help="training time per fold, e.g. 3m")
    parser.add_argument("--configs", default=None, help="comma-separated (default: planned)")
    parser.add_argument("--folds", default="all")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--root", type=Path, default=REPO / "autoseg_data_bench")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from autoseg.paths import results_dir
    from autoseg.pipeline import plan_and_train
    from autoseg.planning.plan import load_plan
    from autoseg.planning.schedule import parse_duration

    root = args.root.resolve()
    folder = prepare(args.dataset, root)
    fold_budget = parse_duration(args.fold_budget)
    configs = args.configs.split(",") if args.configs else None
    t0 = time.perf_counter()
    result = plan_and_train(
        folder,
        root,
        configs=configs,
        folds=args.folds,
        time_budget_s=fold_budget * 5,
        device="cpu",
        num_workers=args.workers,
        progress=True,
    )
    wall = time.perf_counter() - t0
    results = results_dir(root) / folder
    result_plan = load_plan(result.plan_path)
    folds = list(range(5)) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    report = {
        "dataset": args.dataset,
        "fold_budget": args.fold_budget,
        "wall_s": round(wall, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(),
        },
        "command": " ".join(command_line()),
        "configs": {},
        "inference": {
            k: result.inference.get(k)
            for k in ("chosen", "cv_dice", "cv_dice_postprocessed", "candidates", "postprocessing")
        },
    }
    print(f"\n{args.dataset}: fold budget {args.fold_budget}, wall {wall / 60:.1f} min")
    for config in result.trained:
        rows = fold_scores(results, config, folds)
        per_epoch = result_plan.configurations[config].schedule
        per_epoch = per_epoch.iterations_per_epoch if per_epoch else None
        for row in rows:
            row["epochs"] = fold_epochs(results, config, row["fold"])
            row["iterations"] = row["epochs"] * per_epoch if row["epochs"] and per_epoch else None
        dices = [r["dice"] for r in rows]
        report["configs"][config] = {
            "folds": rows,
            "mean_dice": statistics.fmean(dices) if dices else None,
            "sd_dice": statistics.stdev(dices) if len(dices) > 1 else None,
        }
        text = ", ".join(f"{r['dice']:.3f} ({r['iterations']} it)" for r in rows)
        sd = report["configs"][config]["sd_dice"]
        print(
            f"  {config:<12} fold Dice [{text}]  mean {statistics.fmean(dices):.3f}"
            + (f" ± {sd:.3f}" if sd is not None else "")
        )
    for cand in result.inference.get("candidates", []):
        print(f"  pooled out-of-fold {cand['name']:<24} Dice {cand['mean_dice']:.3f}")
    post = result.inference.get("cv_dice_postprocessed")
    print(f"  chosen {result.inference.get('chosen')}, with post-processing {post}")
    out = (
        args.out or REPO / "benchmarks" / "results" / "autoseg_cv" / f"accuracy_{args.dataset}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(out)
    print(f"  written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
