"""``autoseg fingerprint DATASET``: dataset statistics for the planner."""

from __future__ import annotations

import argparse

from autoseg.errors import AutosegError
from autoseg.paths import resolve_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fingerprint",
        help="compute dataset statistics (spacing, shapes, label sizes, intensities)",
        description="Read every training case once and write "
        "$AUTOSEG_ROOT/preprocessed/<dataset>/fingerprint.json, which 'autoseg plan' uses. "
        "An up-to-date fingerprint is kept unless --overwrite is given.",
    )
    p.add_argument("dataset", help="dataset id (12), folder name (012_Nerves) or path")
    p.add_argument("--overwrite", action="store_true", help="recompute even if up to date")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: min(4, CPUs)); 1 runs in this process",
    )
    p.add_argument("--root", default=None, help="data root (default: $AUTOSEG_ROOT)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # Imported here so that 'autoseg --help' and other commands do not pay for it.
    from autoseg.fingerprint import (
        fingerprint_is_fresh,
        fingerprint_path,
        format_summary,
        load_fingerprint,
        run_fingerprint,
    )

    if args.workers is not None and args.workers < 1:
        raise AutosegError(
            f"--workers {args.workers} is not a number of processes", fix="use 1 or more"
        )
    dataset_dir = resolve_dataset(args.dataset, args.root)
    out = fingerprint_path(dataset_dir, args.root)
    fresh = not args.overwrite and fingerprint_is_fresh(dataset_dir, out)
    if not fresh:
        out = run_fingerprint(
            dataset_dir, args.root, overwrite=True, num_workers=args.workers, progress=True
        )
    print(format_summary(load_fingerprint(out)))
    if fresh:
        print(f"fingerprint up to date (use --overwrite to recompute): {out}")
    else:
        print(f"fingerprint written: {out}")
    return 0
