"""``autoseg verify DATASET``: check a raw dataset before fingerprinting and training.

Python API: :func:`autoseg.io.verify.verify_dataset` (and ``summary_line`` for the last line).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoseg.errors import AutosegError
from autoseg.io.verify import summary_line, verify_dataset
from autoseg.paths import resolve_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a raw dataset: layout, grids, label values, unreadable files",
        description="Check a raw dataset and print one line per problem, then a summary. "
        "Exit status 0 when there are no errors (warnings allowed), 1 otherwise. "
        "Python API: autoseg.io.verify.verify_dataset.",
    )
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="dataset id (12), folder name under $AUTOSEG_ROOT/raw (012_Nerves or nnU-Net's "
        "Dataset012_Nerves), or a path to the folder",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that read cases (default: min(4, CPU count); 1 reads in this process)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    folder = _dataset_folder(args.dataset)
    problems = verify_dataset(folder, num_workers=args.workers)
    for problem in problems:
        print(problem)
    print(summary_line(folder, problems))
    return 1 if any(p.is_error for p in problems) else 0


def _dataset_folder(spec: str) -> Path:
    """resolve_dataset, except that an existing folder without dataset.json is still checked.

    The user then sees "no dataset.json here" as a problem of that folder rather than "no
    dataset named <path> under $AUTOSEG_ROOT/raw".
    """
    try:
        return resolve_dataset(spec)
    except AutosegError:
        if Path(spec).is_dir():
            return Path(spec)
        raise
