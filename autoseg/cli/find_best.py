"""``autoseg find-best DATASET``: choose the configuration or ensemble, and the post-processing.

Python API: :func:`autoseg.evaluation.find_best.find_best`.
"""

from __future__ import annotations

import argparse

from autoseg.errors import AutosegError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "find-best",
        help="choose the best configuration / ensemble of two and the post-processing",
        description="Score every trained configuration, and every ensemble of two, on the "
        "out-of-fold validation probabilities (mean foreground Dice; HD95 breaks ties within "
        "0.002), then decide per label whether removing connected components improves the "
        "cross-validated Dice, and whether predicting at finer grids too (scale views) raises it. "
        "Writes $AUTOSEG_ROOT/results/<dataset>/inference.json, which "
        "'autoseg predict -d DATASET' uses. Rules: documentation/find_best.md. "
        "Python API: autoseg.evaluation.find_best.find_best.",
    )
    p.add_argument("dataset", help="dataset id (12), folder name (012_Nerves) or path")
    p.add_argument(
        "--configs",
        nargs="+",
        default=None,
        metavar="CONFIG",
        help="only these configurations, e.g. 2d 3d_fullres or 2d,3d_fullres (default: every "
        "configuration with validation results for all folds)",
    )
    p.add_argument(
        "--folds",
        nargs="+",
        default=None,
        metavar="K",
        help="folds to use, e.g. 0,1,2,3,4 (default: all folds of splits.json)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: min(4, CPUs)); 1 runs in this process",
    )
    p.add_argument(
        "--no-scale-views",
        action="store_true",
        help="do not try predicting at 1.1x and 1.2x finer grids too (the trial predicts every "
        "validation case twice more; documentation/find_best.md, 'Scale views')",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--root", default=None, help="data root (default: $AUTOSEG_ROOT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoseg.evaluation.find_best import INFERENCE_FILE, find_best, format_find_best
    from autoseg.paths import resolve_dataset, results_dir

    if args.workers is not None and args.workers < 1:
        raise AutosegError(f"--workers {args.workers} must be 1 or more")
    info = find_best(
        args.dataset,
        args.root,
        configs=args.configs,
        folds=args.folds,
        progress=not args.quiet,
        num_workers=args.workers,
        scale_views=not args.no_scale_views,
    )
    print(format_find_best(info))
    out = results_dir(args.root) / resolve_dataset(args.dataset, args.root).name / INFERENCE_FILE
    print(f"wrote {out}")
    return 0
