"""Which optimizer a short (time-budgeted) schedule should use: SGD against AdamW.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.short_schedule \\
        [--kinds mri3d us2d] [--iterations 1000 3000] [--folds 0]
        [--variants sgd:0.01 adamw:0.003] [--work DIR] [--json PATH]

The data are the demo's phantoms (``autoseg.demo.DATASETS``: thigh 16x112x112 at 3x1.2x1.2 mm,
wrist 128x160), converted and preprocessed under ``--work`` (default
``autoseg_data/short_schedule``), with one fixed configuration per kind: ``2d`` at 8-128
features, batch 2, patch 64x80 (thigh) / 32x64 (wrist) — the networks a few-minute CPU budget
leads to. The patch and widths are set here, not planned, so that every variant trains the
same network whatever the machine's speed. Each (kind, fold, iterations, variant) trains
``iterations / 100`` epochs of 100 iterations with :class:`autoseg.training.Trainer` (the
variant's optimizer and initial learning rate, poly decay, one torch thread) and runs the
end-of-fold :func:`autoseg.evaluation.validation.validate_fold` (sliding window over the fold's
validation cases at their original geometry). The result is the mean validation Dice of the
nerve, written to ``--json`` and printed as a table; documentation/planning.md ("Optimizer of a
short schedule") has the figures behind ``planning.schedule.optimizer_rule``.

A rerun skips finished runs (``<work>/runs/<kind>_<fold>_<iterations>_<variant>.json``).
"""

from __future__ import annotations

import argparse
import json
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
from autoseg.planning.plan import SGD_WEIGHT_DECAY
from autoseg.planning.schedule import ADAMW_WEIGHT_DECAY

# The fixed networks: what the demo's 6-minute / 4-minute budgets planned on 2 cores.
FIXED = {
    "mri3d": {"patch": [64, 80], "features": [8, 16, 32, 64, 128]},
    "us2d": {"patch": [32, 64], "features": [8, 16, 32, 64, 128]},
}
WEIGHT_DECAY = {"sgd": SGD_WEIGHT_DECAY, "adamw": ADAMW_WEIGHT_DECAY}


def prepare(kind: str, work: Path) -> tuple[str, Path]:
    """Convert, plan (memory plan, ``2d`` only) and preprocess the demo phantom of ``kind``."""
    from autoseg.demo import DATASETS, training_dataset
    from autoseg.planning.planner import run_plan
    from autoseg.preprocessing.preprocess import preprocess_dataset

    ds = next(d for d in DATASETS if d.kind == kind)
    folder = training_dataset(ds, root=work, progress=False)
    raw = work / "raw" / folder
    plans = work / "preprocessed" / folder / "plans.json"
    if not plans.is_file():
        run_plan(raw, work, configs=["2d"], progress=False)
        _fix_network(plans, FIXED[kind])
    preprocess_dataset(raw, work, configs=["2d"], progress=False)
    return folder, raw


def _fix_network(plans: Path, fixed: dict) -> None:
    from autoseg.planning.patch import parameter_count

    plan = json.loads(plans.read_text())
    c = plan["configurations"]["2d"]
    arch = c["architecture"]
    n = len(fixed["features"])
    for key in ("kernel_sizes", "strides", "n_blocks_per_stage"):
        arch[key] = arch[key][:n]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: n - 1]
    arch["features_per_stage"] = list(fixed["features"])
    c["architecture"] = arch
    c["patch_size"] = list(fixed["patch"])
    c["batch_size"] = 2
    c["parameters"] = parameter_count(arch)
    plans.write_text(json.dumps(plan, indent=1))


def run_one(
    work: Path, kind: str, folder: str, raw: Path, fold: int, iterations: int, variant: str
) -> dict:
    import torch

    from autoseg.evaluation.validation import validate_fold
    from autoseg.io import list_cases, load_dataset_json
    from autoseg.planning.plan import load_plan
    from autoseg.preprocessing.preprocess import data_identifier
    from autoseg.training.run import options_from_plan, setup_from_plan
    from autoseg.training.splits import load_or_create_splits
    from autoseg.training.trainer import Trainer

    name, lr = variant.split(":")
    torch.set_num_threads(1)
    plan = load_plan(work / "preprocessed" / folder)
    data_dir = work / "preprocessed" / folder / data_identifier(plan, "2d")
    setup = setup_from_plan(plan, "2d", data_dir)
    opts = options_from_plan(
        plan,
        "2d",
        progress=False,
        device="cpu",
        optimizer=name,
        initial_lr=float(lr),
        weight_decay=WEIGHT_DECAY[name],
    )
    opts.epochs, opts.iterations_per_epoch = max(1, iterations // 100), 100
    results = work / "results" / f"{folder}_{iterations}_{variant.replace(':', '_')}"
    ds = load_dataset_json(raw)
    ids = [c.case_id for c in list_cases(raw, ds)]
    splits = load_or_create_splits(
        results / "splits.json", ids, [ds.subject_of(c) for c in ids], [None] * len(ids)
    )
    out = ResultsLayout(results).fold_dir("2d", fold)
    start = time.perf_counter()
    trainer = Trainer(setup, opts, splits[fold]["train"], splits[fold]["val"], out, fold=fold)
    trainer.fit()
    train_s = time.perf_counter() - start
    summary = validate_fold(raw, plan, "2d", fold, results, root=work, progress=False, device="cpu")
    return {
        "kind": kind,
        "fold": fold,
        "iterations": iterations,
        "variant": variant,
        "dice": summary["mean_dice"]["1"],
        "train_s": round(train_s, 1),
        "pseudo_dice": [round(e["pseudo_dice"], 3) for e in trainer.log],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["mri3d", "us2d"], choices=list(FIXED))
    parser.add_argument("--iterations", nargs="+", type=int, default=[1000, 3000])
    parser.add_argument("--folds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=["sgd:0.01", "adamw:0.003"])
    parser.add_argument("--work", type=Path, default=Path("autoseg_data/short_schedule"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.kinds:
        folder, raw = prepare(kind, work)
        for fold in args.folds:
            for iterations in args.iterations:
                for variant in args.variants:
                    record = work / "runs" / f"{kind}_{fold}_{iterations}_{variant}.json"
                    if record.is_file():
                        row = json.loads(record.read_text())
                    else:
                        row = run_one(work, kind, folder, raw, fold, iterations, variant)
                        record.write_text(json.dumps(row, indent=1))
                    rows.append(row)
                    print(
                        f"{kind:6s} fold {fold} {iterations:6d} it  {variant:14s} "
                        f"Dice {row['dice']:.3f}  ({row['train_s']:.0f} s)",
                        flush=True,
                    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
