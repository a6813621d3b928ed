"""``autoseg suggest-labels -i UNLABELLED/ -d DATASET -n K``: see
:mod:`autoseg.inference.suggest`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "suggest-labels",
        help="which unlabelled scans to label next: typical ones of what is not yet covered",
        description="Predict every unlabelled scan with uncertainty maps, then choose K to "
        "label: by default the most typical scan of each group of similar scans that no "
        "labelled (training) scan covers yet; with --strategy uncertain the most uncertain "
        "first, each next one by uncertainty x distance to the scans already chosen or "
        "labelled, so near-identical frames are not all suggested. Writes "
        "suggestions.csv/.json (with the reason for each) and the predictions with their "
        "uncertainty maps under OUT/predictions.",
    )
    p.add_argument("-i", "--input", required=True, help="folder (or file) of unlabelled scans")
    p.add_argument("-d", "--dataset", required=True, help="trained dataset id, name or path")
    p.add_argument("-n", "--number", type=int, required=True, help="how many scans to suggest")
    p.add_argument(
        "-o",
        "--output",
        help="output folder (default: $AUTOSEG_ROOT/results/<dataset>/suggestions)",
    )
    p.add_argument(
        "--label",
        default="each",
        help="with --strategy uncertain, rank by: 'each' (default: the labels take turns, "
        "each by its own uncertainty), a label name (that structure only), or 'any' (one "
        "score over every label)",
    )
    p.add_argument(
        "--strategy",
        default="typical",
        choices=["typical", "uncertain"],
        help="typical (default): the most typical scan of each group of similar scans that "
        "nothing labelled covers yet; uncertain: uncertainty x diversity (see --label)",
    )
    p.add_argument("--config", action="append", help="configuration (repeat for an ensemble)")
    p.add_argument("--folds", help="folds to average, e.g. 0,1,2 (default: all trained)")
    p.add_argument("--checkpoint", default="final", choices=["final", "best"])
    p.add_argument("--no-tta", action="store_true", help="no mirroring (about 2^dim faster)")
    p.add_argument("--device", default="auto")
    p.add_argument("--fp32", action="store_true", help="full float32 (see autoseg predict)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from autoseg.errors import AutosegError
    from autoseg.inference.predict import find_inputs, load_predictor
    from autoseg.inference.suggest import (
        default_output,
        format_table,
        labelled_cases,
        suggest_labels,
    )

    if args.number < 1:
        raise AutosegError(f"-n {args.number}: ask for at least one scan", fix="give -n 1 or more")
    folds = None if args.folds is None else [int(f) for f in args.folds.split(",")]
    predictor = load_predictor(
        args.dataset,
        configs=args.config,
        folds=folds,
        checkpoint=args.checkpoint,
        device=args.device,
        tta=not args.no_tta,
        amp=not args.fp32,
    )
    inputs = find_inputs(args.input, predictor.plan.n_channels)
    out = args.output or default_output(args.dataset)
    labelled = labelled_cases(args.dataset)
    result = suggest_labels(
        predictor,
        inputs,
        out,
        args.number,
        label=args.label,
        strategy=args.strategy,
        labelled=labelled,
        progress=not args.no_progress,
    )
    n_ok = len(result.ranking)
    print(f"{len(result.rows)} of {n_ok} scans suggested for labelling:")
    print(format_table(result.rows))
    print(f"written: {out}/suggestions.csv and suggestions.json")
    for case, message in result.failed.items():
        print(f"failed: {case}: {message}")
    return 0 if not result.failed else 1
