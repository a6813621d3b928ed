"""``autoseg robustness -d DATASET --cases DIR``: Dice under smaller or shifted fields of view
and changed intensities. Python API: :func:`autoseg.evaluation.robustness.run_robustness`."""

from __future__ import annotations

import argparse

from autoseg.errors import AutosegError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "robustness",
        help="how Dice moves when labelled cases are cropped, shifted or change contrast",
        description="Predict labelled cases unperturbed and with a smaller field of view "
        "(crop), an off-centre one (shift), scaled intensities, a gamma change and noise; "
        "print mean Dice per label and perturbation with the change vs unperturbed, and "
        "write robustness.json, robustness.txt and robustness.png (shown by autoseg report). "
        "DIR holds imagesTs + labelsTs (else imagesTr + labelsTr), or is such an images "
        "folder. documentation/evaluation.md. "
        "Python API: autoseg.evaluation.robustness.run_robustness.",
    )
    p.add_argument("-d", "--dataset", required=True, help="trained dataset id, name or path")
    p.add_argument("--cases", required=True, metavar="DIR", help="labelled cases (see above)")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="DIR",
        help="output folder (default: the dataset's results folder)",
    )
    p.add_argument(
        "--perturbations",
        default=None,
        metavar="crop,shift,...",
        help="subset of crop,shift,scale,gamma,noise (default: all)",
    )
    p.add_argument(
        "--max-cases", type=int, default=None, metavar="N", help="only the first N cases by name"
    )
    p.add_argument("--config", action="append", help="configuration (repeat for an ensemble)")
    p.add_argument("--folds", help="folds to average, e.g. 0,1,2 (default: all trained)")
    p.add_argument("--checkpoint", default="final", choices=["final", "best"])
    p.add_argument("--no-tta", action="store_true", help="no mirroring (about 2^dim faster)")
    p.add_argument("--no-postprocessing", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--fp32", action="store_true", help="full float32 inference")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _folds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(f) for f in text.split(",")]
    except ValueError as exc:
        raise AutosegError(
            f"--folds {text!r} is not a list of fold numbers", fix="e.g. 0,1,2"
        ) from exc


def run(args: argparse.Namespace) -> int:
    from autoseg.evaluation.robustness import format_table, run_robustness

    result = run_robustness(
        args.dataset,
        args.cases,
        out_dir=args.output,
        perturbations=args.perturbations,
        max_cases=args.max_cases,
        configs=args.config,
        folds=_folds(args.folds),
        checkpoint=args.checkpoint,
        device=args.device,
        tta=not args.no_tta,
        postprocess=not args.no_postprocessing,
        amp=not args.fp32,
        progress=not args.no_progress,
    )
    print(format_table(result.summary))
    print(
        f"{result.data['n_cases']} case(s) from {result.data['layout']}; "
        f"wrote {', '.join(str(f) for f in result.files.values())}"
    )
    return 0
