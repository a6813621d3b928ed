"""``autoseg phantom``: write a synthetic nerve dataset folder (see documentation/phantoms.md).

Python API: :func:`autoseg.phantoms.generate_phantom`.
"""

from __future__ import annotations

import argparse
import dataclasses

from autoseg.errors import AutosegError
from autoseg.phantoms import DEFAULT_CASES, KINDS, default_config, generate_phantom


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a synthetic nerve dataset (3D thigh MRI or 2D ultrasound) to a folder",
        description="Write a deterministic synthetic nerve dataset as a source folder that "
        "'autoseg convert OUT --name X' ingests. mri3d: OUT/<case>.nii.gz + "
        "OUT/<case>_mask.nii.gz; us2d: OUT/images/<case>.png + OUT/masks/<case>.png; both: "
        "OUT/cases.csv (case,subject,cohort). Same seed, same bytes. "
        "Python API: autoseg.phantoms.generate_phantom.",
    )
    p.add_argument("out", metavar="OUT", help="output folder (must be empty or new)")
    p.add_argument("--kind", choices=KINDS, required=True, help="mri3d or us2d")
    p.add_argument(
        "--cases",
        type=int,
        default=None,
        help=f"number of cases (default {DEFAULT_CASES['mri3d']} for mri3d, "
        f"{DEFAULT_CASES['us2d']} for us2d)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--shape",
        default=None,
        help="array shape, comma-separated in array order: z,y,x for mri3d (default "
        "24,160,160), y,x for us2d (default 256,320; real frames are ~470,600)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier phantom in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_shape(text: str, ndim: int) -> tuple[int, ...]:
    """'24,160,160' -> (24, 160, 160); AutosegError if it is not ``ndim`` positive integers."""
    parts = [t.strip() for t in text.replace("x", ",").split(",") if t.strip()]
    try:
        shape = tuple(int(t) for t in parts)
    except ValueError:
        shape = ()
    if len(shape) != ndim or min(shape, default=0) <= 0:
        raise AutosegError(
            f"--shape {text!r} must be {ndim} positive integers separated by commas",
            fix="e.g. --shape 24,160,160 for mri3d or --shape 470,600 for us2d",
        )
    return shape


def run(args: argparse.Namespace) -> int:
    config = default_config(args.kind)
    if args.shape:
        shape = parse_shape(args.shape, 3 if args.kind == "mri3d" else 2)
        config = dataclasses.replace(config, shape=shape)
    cases = generate_phantom(
        args.kind,
        args.out,
        n_cases=args.cases,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        config=config,
    )
    subjects = {c.subject for c in cases}
    patients = {c.subject for c in cases if c.cohort == "patient"}
    extra = f", {sum(c.has_branch for c in cases)} with a branching nerve"
    print(
        f"wrote {len(cases)} {args.kind} cases of {len(subjects)} subjects "
        f"({len(patients)} of them patients{extra if args.kind == 'mri3d' else ''}) "
        f"to {args.out}\n"
        f"next: autoseg convert {args.out} --name <Name>"
    )
    return 0
