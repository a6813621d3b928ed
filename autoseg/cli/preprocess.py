"""``autoseg preprocess DATASET``: crop, normalize and resample the training cases."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "preprocess",
        help="crop, normalize and resample the training cases for the plan's configurations",
        description="Write <root>/preprocessed/<dataset>/<data identifier>/ for every data "
        "identifier of the plan (configurations with the same spacing share one). Finished "
        "cases are skipped, so an interrupted run resumes where it stopped. Python API: "
        "autoseg.preprocessing.preprocess_dataset.",
    )
    p.add_argument("dataset", help="dataset id (12), folder name (012_Nerves) or path")
    p.add_argument(
        "--configs",
        nargs="+",
        metavar="CONFIG",
        help="configurations to preprocess (default: all of the plan), e.g. 3d_fullres 2d",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: min(4, CPUs); 1 = no subprocesses)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="recompute cases that are already finished"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from autoseg.preprocessing.preprocess import preprocess_dataset

    folders = preprocess_dataset(
        args.dataset,
        configs=args.configs,
        num_workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for folder in folders:
        print(f"preprocessed: {folder}")
    return 0
