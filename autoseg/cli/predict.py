"""``autoseg predict -i IN -o OUT -d DATASET``: see :mod:`autoseg.inference.predict`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment new scans with the trained model (output keeps the input's geometry)",
        description="Segment a file, a folder or a DICOM series with the configuration(s), "
        "folds and post-processing chosen by find-best (inference.json), or with --config "
        "and --folds. Outputs keep the input's format and exact geometry; predictions.json "
        "flags cases to check. Python API: autoseg.inference.predict.load_predictor + "
        "predict_cases.",
    )
    p.add_argument("-i", "--input", required=True, help="image file, folder or DICOM folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("-d", "--dataset", required=True, help="trained dataset id, name or path")
    p.add_argument("--config", action="append", help="configuration (repeat for an ensemble)")
    p.add_argument("--folds", help="folds to average, e.g. 0,1,2 (default: all trained)")
    p.add_argument("--checkpoint", default="final", choices=["final", "best"])
    p.add_argument("--no-tta", action="store_true", help="no mirroring (about 2^dim faster)")
    p.add_argument("--no-postprocessing", action="store_true")
    p.add_argument("--save-probabilities", action="store_true")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write <case>_uncertainty and <case>_disagreement maps (0..1, the input's "
        "grid) and uncertainty.json/.csv with a score per case",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--fp32",
        action="store_true",
        help="full float32 (default: float16 on a GPU, bfloat16 on a CPU that has it in hardware)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from autoseg.inference.predict import find_inputs, load_predictor, predict_cases

    folds = None if args.folds is None else [int(f) for f in args.folds.split(",")]
    predictor = load_predictor(
        args.dataset,
        configs=args.config,
        folds=folds,
        checkpoint=args.checkpoint,
        device=args.device,
        tta=not args.no_tta,
        postprocess=not args.no_postprocessing,
        amp=not args.fp32,
    )
    inputs = find_inputs(args.input, predictor.plan.n_channels)
    summary = predict_cases(
        predictor,
        inputs,
        args.output,
        save_probabilities=args.save_probabilities,
        uncertainty=args.uncertainty,
        progress=not args.no_progress,
    )
    flagged = [c for c, f in summary.flags.items() if f["check"]]
    print(f"{len(summary.written)} of {len(inputs)} cases written to {args.output}")
    if args.uncertainty and summary.uncertainty:
        top = max(summary.uncertainty, key=lambda c: summary.uncertainty[c]["score"])
        print(
            f"uncertainty scores in {args.output}/uncertainty.csv; highest: {top} "
            f"({summary.uncertainty[top]['score']:.3f})"
        )
    if flagged:
        print(f"check these cases (see predictions.json): {', '.join(flagged)}")
    for case, message in summary.failed.items():
        print(f"failed: {case}: {message}")
    return 0 if summary.ok else 1
