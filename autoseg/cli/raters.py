"""``autoseg raters --raters DIR1 DIR2 ...``: consensus, inter-rater agreement, human-level test.

Python API: :func:`autoseg.evaluation.compare_raters`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from autoseg.errors import AutosegError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "raters",
        help="inter-rater agreement, consensus masks, and model vs raters",
        description="Masks of the same cases by several raters (matched by file name) -> "
        "consensus per case (majority vote or STAPLE), pairwise rater agreement and, with "
        "--pred, a one-sided Mann-Whitney U test (alpha 0.05) of whether the model is worse "
        "than the raters. Protocol: documentation/evaluation.md. "
        "Python API: autoseg.evaluation.compare_raters.",
    )
    p.add_argument(
        "--raters", nargs="+", required=True, metavar="DIR", help="one folder per rater (>= 2)"
    )
    p.add_argument("--pred", default=None, metavar="P", help="model predictions to compare")
    p.add_argument("--method", choices=("majority", "staple"), default="majority")
    p.add_argument("--labels", default=None, metavar="1,2", help="labels (default: all present)")
    p.add_argument("--cohorts", default=None, metavar="CSV|JSON", help="case,cohort table")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoseg.evaluation import compare_raters

    if not 0 < args.alpha < 1:
        raise AutosegError(f"--alpha {args.alpha} must lie between 0 and 1")
    result = compare_raters(
        args.raters,
        pred_dir=args.pred,
        method=args.method,
        labels=args.labels,
        cohorts=args.cohorts,
        out_dir=Path(args.out),
        alpha=args.alpha,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    print(f"{len(result.cases)} case(s), {len(result.raters)} raters, consensus: {result.method}")
    if result.skipped_cases:
        print(f"skipped {len(result.skipped_cases)} case(s) missing from some folder")
    for row in result.pairwise_summary:
        print(
            f"label {row['label']} {row['rater_a']} vs {row['rater_b']}: "
            f"Dice {_f(row['dice_mean'])} ± {_f(row['dice_sd'])}, "
            f"HD95 {_f(row['hd95_mm_mean'])} mm"
        )
    for c in result.comparisons:
        if c["cohort"] == "all":
            print(
                f"model vs {c['baseline']}: label {c['label']} {c['metric']}: median "
                f"{_f(c['median_model'])} vs {_f(c['median_human'])}, p={_f(c['p_value'])} "
                f"-> {c['verdict']}"
            )
    print(f"wrote {Path(args.out) / 'raters.json'} and CSV tables")
    return 0


def _f(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"
