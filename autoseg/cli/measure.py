"""``autoseg measure SEG``: nerve CSA, diameters, volume, length and signal per slice.

Python API: :func:`autoseg.evaluation.measure_files` (arrays: ``measure_nerve``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from autoseg.errors import AutosegError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure nerves in segmentations: CSA, diameters, volume, length, intensity",
        description="Per case: <case>_slices.csv (one row per slice and branch) and "
        "<case>_csa.png; for all cases measurements.csv and measurements.json. Method and "
        "error sources: documentation/measurements.md. "
        "Python API: autoseg.evaluation.measure_files.",
    )
    p.add_argument("seg", metavar="SEG", help="segmentation file or folder of them")
    p.add_argument(
        "--image",
        default=None,
        metavar="IMG",
        help="image file or folder (named <case> or <case>_0000) for the mean signal",
    )
    p.add_argument("--label", type=int, default=1, help="label value of the nerve (default 1)")
    p.add_argument(
        "--axis",
        default="auto",
        choices=("auto", "0", "1", "2"),
        help="array axis (z=0, y=1, x=2) the slices are taken along in 3D (default auto: the "
        "nerve's longest extent, z for a sciatic nerve in an axial stack)",
    )
    p.add_argument(
        "--spacing",
        default=None,
        metavar="Z,Y,X",
        help="voxel size in mm in array order, overriding the file's (e.g. 0.08,0.08 for an "
        "ultrasound PNG, which stores none)",
    )
    p.add_argument("--cohorts", default=None, metavar="CSV|JSON", help="case,cohort table")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default: <SEG>/measurements)"
    )
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _spacing(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError as exc:
        raise AutosegError(f"--spacing {text!r} is not a list of numbers") from exc
    if not values or any(v <= 0 or not math.isfinite(v) for v in values):
        raise AutosegError(f"--spacing {text!r} must hold positive numbers", fix="e.g. 3,0.5,0.5")
    return values


def run(args: argparse.Namespace) -> int:
    from autoseg.evaluation import measure_files

    seg = Path(args.seg)
    out = Path(args.out) if args.out else (seg if seg.is_dir() else seg.parent) / "measurements"
    results = measure_files(
        seg,
        args.image,
        label=args.label,
        out_dir=out,
        axis=None if args.axis == "auto" else int(args.axis),
        spacing=_spacing(args.spacing),
        cohorts=args.cohorts,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    for case, m in results:
        s = m.summary()
        if m.empty:
            print(f"{case}: label {m.label} not present")
            continue
        text = (
            f"{case}: {s['n_slices']} slice(s), {s['n_branches']} branch(es), "
            f"CSA perpendicular mean {s['csa_perpendicular_mean_mm2']:.3g} mm² "
            f"(max {s['csa_perpendicular_max_mm2']:.3g})"
        )
        if m.ndim == 3:
            text += f", volume {m.volume_mm3:.4g} mm³, length {m.length_mm:.4g} mm"
        print(text + "".join(f" [{n}]" for n in m.notes))
    print(f"wrote {out / 'measurements.csv'} and per-case tables and plots")
    return 0
