"""``make demo``: the whole product on the built-in phantoms, on the CPU, in minutes.

For a 3D thigh-MRI phantom and a 2D wrist-ultrasound phantom: generate training cases and
held-back cases (another seed: other subjects), ``convert`` the training folder, run
``plan-and-train`` with a time budget (the planner picks one split or 5 folds), ``predict``
the held-back images, ``evaluate`` them against their masks and write the dataset's
``report.html`` (``autoseg report``). Every step is the public Python API that the CLI also
calls, and every step skips what a previous run already finished. The output ends with the
path of each report: the page to open first.

Run it with ``python -m autoseg.demo [--budget-3d 4m] [--budget-2d 3m]``; data goes under
``$AUTOSEG_ROOT`` (``make demo`` sets ``autoseg_data/demo``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from autoseg.errors import AutosegError
from autoseg.paths import data_root
from autoseg.phantoms import Mri3dConfig, Us2dConfig


@dataclass(frozen=True)
class DemoDataset:
    kind: str  # phantom kind
    name: str
    dataset_id: int
    n_train: int
    n_heldout: int
    channel: str
    budget: str  # default time budget for plan-and-train
    config: object  # phantom config: smaller than the defaults so that training fits minutes


# A fold needs about 1000 iterations before the phantom nerve is found at all (measured:
# documentation/planning.md, "Time budget"), so the demo's phantoms are smaller than the
# defaults (same anatomy in mm on a coarser grid) to make those iterations cheap on 2 cores.
DATASETS = (
    DemoDataset(
        "mri3d",
        "ThighPhantom",
        901,
        20,
        4,
        "T2",
        "5m",
        Mri3dConfig(shape=(16, 112, 112), spacing=(3.0, 1.2, 1.2)),
    ),
    DemoDataset("us2d", "WristPhantom", 902, 30, 6, "US", "3m", Us2dConfig(shape=(128, 160))),
)


def _heldout(ds: DemoDataset, base: Path) -> tuple[Path, Path]:
    """Held-back phantom cases (seed 2: new subjects), images and masks in two folders."""
    from autoseg.phantoms import write_held_out

    return write_held_out(ds.kind, base / "heldout" / ds.kind, ds.n_heldout, 2, ds.config)


def training_dataset(ds: DemoDataset, root: str | Path | None = None, progress: bool = True) -> str:
    """The phantom's training cases (seed 1) generated under ``<root>/source`` and converted
    into ``<root>/raw``, unless that is already done; returns the dataset folder name."""
    from autoseg.io.convert import convert_folder
    from autoseg.paths import dataset_folder_name, raw_dir
    from autoseg.phantoms import generate_phantom

    folder = dataset_folder_name(ds.dataset_id, ds.name)
    if not (raw_dir(root) / folder / "dataset.json").is_file():
        src = data_root(root) / "source" / ds.kind
        generate_phantom(
            ds.kind, src, ds.n_train, seed=1, overwrite=True, progress=progress, config=ds.config
        )
        result = convert_folder(
            src,
            ds.name,
            ds.dataset_id,
            label_names=["nerve"],
            channel_names=[ds.channel],
            overwrite=True,
            root=root,
            progress=progress,
        )
        if not result.ok:
            raise AutosegError("the converted phantom did not verify", path=result.target)
    return folder


def run_dataset(ds: DemoDataset, budget_s: float, progress: bool) -> dict:
    from autoseg.evaluation.metrics import evaluate_folders
    from autoseg.evaluation.report import build_report
    from autoseg.inference.predict import find_inputs, load_predictor, predict_cases
    from autoseg.paths import dataset_folder_name
    from autoseg.pipeline import plan_and_train

    base = data_root()
    t0 = time.perf_counter()
    name = dataset_folder_name(ds.dataset_id, ds.name)
    print(f"\n=== {name}: {ds.kind} phantom, {ds.n_train} training cases ===", flush=True)
    folder = training_dataset(ds, progress=progress)
    result = plan_and_train(folder, time_budget_s=budget_s, progress=progress)
    images, masks = _heldout(ds, base)
    predictor = load_predictor(folder)
    out = base / "predictions" / folder
    inputs = find_inputs(images, predictor.plan.n_channels)
    summary = predict_cases(predictor, inputs, out, progress=progress)
    evaluation = evaluate_folders(
        out, masks, labels=[1], out_dir=out / "evaluation", progress=False
    )
    report = build_report(folder, progress=progress)
    return {
        "dataset": folder,
        "chosen": result.inference.get("chosen"),
        "cv_dice": result.inference.get("cv_dice"),
        "cv_dice_post": result.inference.get("cv_dice_postprocessed"),
        "candidates": result.inference.get("candidates", []),
        "estimate": result.inference.get("estimate"),
        "heldout_dice": evaluation.mean("dice"),
        "flagged": [c for c, f in summary.flags.items() if f["check"]],
        "predictions": out,
        "report": report,
        "seconds": time.perf_counter() - t0,
    }


def print_summary(results: list[dict]) -> None:
    print("\n" + "=" * 78)
    print("autoseg demo: summary")
    for r in results:
        print(f"\n{r['dataset']}  ({r['seconds'] / 60:.1f} min)")
        print(f"  chosen configuration : {r['chosen']}")
        estimate = r.get("estimate") or {}
        print(f"  Dice estimate ({estimate.get('text', 'out of fold')}):")
        for c in r["candidates"]:
            print(f"    {c.get('name', '?'):<24} {c.get('mean_dice', float('nan')):.3f}")
        if r["cv_dice_post"] is not None:
            print(f"  with post-processing : {r['cv_dice_post']:.3f}")
        print(f"  held-back cases Dice : {r['heldout_dice']:.3f}")
        if r["flagged"]:
            print(f"  flagged for review   : {', '.join(r['flagged'])}")
        print(f"  predictions          : {r['predictions']}")
        print(f"  metrics              : {r['predictions'] / 'evaluation' / 'summary.csv'}")
    if results:
        print("\nreport.html, the page to open first (one per dataset):")
        for r in results:
            print(f"  {Path(r['report']).resolve()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoseg.demo", description=__doc__)
    parser.add_argument("--budget-3d", default=DATASETS[0].budget)
    parser.add_argument("--budget-2d", default=DATASETS[1].budget)
    parser.add_argument("--only", choices=[d.kind for d in DATASETS])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from autoseg.planning.schedule import parse_duration

    budgets = {"mri3d": args.budget_3d, "us2d": args.budget_2d}
    results = []
    try:
        for ds in DATASETS:
            if args.only and ds.kind != args.only:
                continue
            budget = parse_duration(budgets[ds.kind])
            results.append(run_dataset(ds, budget, progress=not args.no_progress))
    except AutosegError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except Exception as exc:  # one line and a log file, as the CLI does
        from autoseg.errors import report_failure

        print(report_failure("demo", exc, argv)[0], file=sys.stderr)
        return 1
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
