"""How many slices can a lab leave unlabelled? Held-back Dice vs labelling every K-th slice.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.sparse_annotation \\
        [--every 1 2 4 8] [--budget 10m] [--cases 20] [--held-out 8] [--work DIR] [--json PATH]

The thigh MRI phantom (``generate_phantom('mri3d', seed=1)``, ``--cases`` training cases) is
converted once; ``autoseg convert DATASET --sparse-every K`` then makes one dataset per K (K = 1
is the fully labelled baseline, with the same ``ignore`` label declared, so every point runs
the same code). Each is trained with ``autoseg plan-and-train --time-budget B`` (the same B for
every K: equal training budget), predicts the held-back cases (``--held-out`` cases of other
subjects, seed 2, fully labelled) with ``autoseg predict``, and is scored with ``autoseg
evaluate`` (nerve Dice per case, averaged). Printed: one row per K with the share of slices
labelled, the held-back Dice and the wall clock.

Resumable: a K whose ``record.json`` exists under ``--work`` (default
``autoseg_data/sparse_annotation``) is not run again. ``--small`` shrinks everything (4 cases
of 8 x 48 x 48, 1 held back, 2 folds) for a smoke test of the script itself; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    raise SystemExit(2)

SOURCE_SEED, HELD_OUT_SEED = 1, 2
BASE_ID, BASE_NAME = 1, "ThighPhantom"


def phantom_config(small: bool) -> Any:
    from autoseg.phantoms import Mri3dConfig

    return Mri3dConfig(shape=(8, 48, 48)) if small else Mri3dConfig()


def prepare(work: Path, n_cases: int, n_held: int, small: bool) -> tuple[Path, Path]:
    """The fully labelled dataset (id 1) under ``work/root`` and the held-back cases."""
    from autoseg.cli import main as autoseg_main
    from autoseg.paths import raw_dir
    from autoseg.phantoms import generate_phantom, write_held_out

    cfg = phantom_config(small)
    source = work / "source"
    if not (source / "cases.csv").is_file():
        generate_phantom("mri3d", source, n_cases, seed=SOURCE_SEED, config=cfg, overwrite=True)
    images, masks = write_held_out("mri3d", work / "held_out", n_held, HELD_OUT_SEED, cfg)
    if not any(raw_dir().glob(f"{BASE_ID:03d}_*")):
        args = ["convert", str(source), "--name", BASE_NAME, "--id", str(BASE_ID)]
        if autoseg_main([*args, "--label-names", "nerve", "--channel-names", "T2"]) != 0:
            raise SystemExit("converting the phantom failed")
    return images, masks


def run_point(
    every: int, budget: str, images: Path, masks: Path, root: Path, folds: list[str]
) -> dict[str, Any]:
    """Sparse copy, plan-and-train at the budget, predict and score the held-back cases."""
    from autoseg.cli import main as autoseg_main
    from autoseg.evaluation import evaluate_folders
    from autoseg.io import load_dataset_json
    from autoseg.paths import raw_dir

    name, dataset_id = f"ThighSparse{every}", 10 + every
    folder = f"{dataset_id:03d}_{name}"
    if not (raw_dir() / folder).is_dir():
        args = ["convert", str(BASE_ID), "--name", name, "--id", str(dataset_id)]
        if autoseg_main([*args, "--sparse-every", str(every)]) != 0:
            raise SystemExit(f"convert --sparse-every {every} failed")
    started = time.perf_counter()
    if autoseg_main(["plan-and-train", folder, "--time-budget", budget, *folds]) != 0:
        raise SystemExit(f"plan-and-train {folder} failed")
    wall_s = time.perf_counter() - started
    out = root / "test_predictions" / folder
    if autoseg_main(["predict", "-i", str(images), "-o", str(out), "-d", folder]) != 0:
        raise SystemExit(f"predict {folder} failed")
    result = evaluate_folders(out, masks, labels=[1], progress=False, ignore_label=None)
    ds = load_dataset_json(raw_dir() / folder)
    inference = json.loads((root / "results" / folder / "inference.json").read_text())
    return {
        "every": every,
        "labelled_slices": 1.0 / every,
        "budget": budget,
        "wall_s": round(wall_s, 1),
        "held_out_dice": result.mean("dice", label=1),
        "held_out_cases": len(result.cases),
        "cv_dice": inference.get("cv_dice"),
        "ignore_label": ds.ignore_label,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--every", type=int, nargs="+", default=[1, 2, 4, 8], metavar="K")
    p.add_argument("--budget", default="10m", help="plan-and-train --time-budget per K")
    p.add_argument("--cases", type=int, default=20, help="training phantom cases")
    p.add_argument("--held-out", type=int, default=8, help="held-back phantom cases")
    p.add_argument("--work", type=Path, default=REPO / "autoseg_data" / "sparse_annotation")
    p.add_argument("--json", type=Path, default=None, help="write the records here too")
    p.add_argument("--small", action="store_true", help="smoke test of the script (tiny data)")
    args = p.parse_args(argv)
    if args.small:
        args.cases, args.held_out = 4, 1
    work = args.work.resolve()
    root = work / "root"
    os.environ["AUTOSEG_ROOT"] = str(root)
    images, masks = prepare(work, args.cases, args.held_out, args.small)
    records = []
    for every in args.every:
        record_path = work / f"every_{every}" / "record.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
        else:
            folds = ["--n-folds", "2"] if args.small else []
            record = run_point(every, args.budget, images, masks, root, folds)
            record_path.parent.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=2))
        records.append(record)
    print(
        f"\nthigh phantom, {args.cases} training cases, plan-and-train --time-budget {args.budget}"
    )
    print(f"{'K':>3}  {'labelled':>8}  {'held-back Dice':>14}  {'CV Dice':>7}  {'wall':>7}")
    for r in records:
        cv = "-" if r["cv_dice"] is None else f"{r['cv_dice']:.3f}"
        print(
            f"{r['every']:>3}  {r['labelled_slices']:>8.0%}  {r['held_out_dice']:>14.3f}  "
            f"{cv:>7}  {r['wall_s']:>6.0f}s"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
