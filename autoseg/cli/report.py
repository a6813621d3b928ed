"""``autoseg report DATASET``: one self-contained HTML page about a trained dataset.

Python API: :func:`autoseg.evaluation.report.build_report`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one HTML page: plan, training curves, cross-validation, worst cases, measurements",
        description="Writes results/<dataset>/report.html: the dataset and how to reproduce "
        "it, the plan in plain words, every fold's training curves, the cross-validation "
        "table with the chosen model and post-processing, sortable per-case metrics of the "
        "out-of-fold predictions, overlay figures of the worst cases, nerve measurements "
        "(prediction vs reference) and a cohort summary. One file with embedded images; it "
        "opens offline. Works on a partly trained dataset (missing parts are named). "
        "Contents: documentation/report.md. Python API: autoseg.evaluation.report.build_report.",
    )
    p.add_argument("dataset", help="dataset id, folder name or path")
    p.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="FILE",
        help="output file (default: $AUTOSEG_ROOT/results/<dataset>/report.html)",
    )
    p.add_argument(
        "--max-worst",
        type=int,
        default=5,
        metavar="N",
        help="overlay figures for the N lowest-Dice cases (default 5; 0: none)",
    )
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoseg.evaluation.report import build_report

    path = build_report(
        args.dataset,
        out=args.out,
        max_worst=args.max_worst,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    print(f"wrote {path}")
    return 0
