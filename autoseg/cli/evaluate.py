"""``autoseg evaluate --pred P --ref R``: segmentation metrics per case, label and cohort.

Python API: :func:`autoseg.evaluation.evaluate_folders` (arrays: ``compute_metrics``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from autoseg.errors import AutosegError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare predicted with reference segmentations (Dice, HD95, ASSD, detection)",
        description="Compare predictions with references matched by file name (a folder of "
        "each, or two files). Writes metrics.json, metrics_per_case.csv and summary.csv. "
        "Definitions and empty-mask rules: documentation/evaluation.md. "
        "Python API: autoseg.evaluation.evaluate_folders.",
    )
    p.add_argument("--pred", required=True, metavar="P", help="predicted segmentation(s)")
    p.add_argument("--ref", required=True, metavar="R", help="reference segmentation(s)")
    p.add_argument(
        "--labels",
        default=None,
        metavar="1,2",
        help="labels to evaluate (default: dataset.json next to R, else every label present)",
    )
    p.add_argument(
        "--cohorts",
        default=None,
        metavar="CSV|JSON",
        help="CSV with columns case,cohort, or a dataset.json with cases.<case>.cohort "
        "(default: a dataset.json next to R, if it names cohorts)",
    )
    p.add_argument(
        "--ignore-label",
        type=int,
        default=None,
        metavar="V",
        help="reference value of unlabelled voxels, which count for nothing (sparse "
        "annotation; default: the 'ignore' label of a dataset.json next to R)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: the prediction folder, or a file's folder)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: min(4, CPUs)); 1 runs in this process",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoseg.evaluation import evaluate_folders

    if args.workers is not None and args.workers < 1:
        raise AutosegError(f"--workers {args.workers} must be 1 or more")
    pred = Path(args.pred)
    out = Path(args.out) if args.out else (pred if pred.is_dir() else pred.parent)
    result = evaluate_folders(
        pred,
        args.ref,
        labels=args.labels,
        cohorts=args.cohorts,
        out_dir=out,
        num_workers=args.workers,
        progress=not args.quiet,
        ignore_label=args.ignore_label,
    )
    print(format_summary(result.summary))
    if result.unmatched_references:
        print(f"{len(result.unmatched_references)} reference(s) have no prediction (not scored)")
    print(f"{len(result.cases)} case(s); wrote {', '.join(str(f) for f in result.files.values())}")
    return 0


def _ms(stats: dict) -> str:
    if stats["n"] == 0 or math.isnan(stats["mean"]):
        return "n/a"
    text = f"{stats['mean']:.3g} ± {stats['sd']:.2g}"
    return text + (f" ({stats['n_undefined']} undefined)" if stats["n_undefined"] else "")


def format_summary(summary: dict) -> str:
    """A few lines per group and label: Dice, HD95, ASSD, failures."""
    lines = []
    blocks = [("all", summary["overall"])] + list(summary.get("groups", {}).items())
    for group, per_label in blocks:
        for label, m in per_label.items():
            fails = m["failure"]
            n_fail = round(fails["mean"] * fails["n"]) if fails["n"] else 0
            lines.append(
                f"{group:>10} label {label}: Dice {_ms(m['dice'])} | HD95 mm {_ms(m['hd95_mm'])}"
                f" | ASSD mm {_ms(m['assd_mm'])} | failures (Dice<0.5) {n_fail}/{fails['n']}"
            )
    return "\n".join(lines)
