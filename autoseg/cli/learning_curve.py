"""``autoseg learning-curve DATASET``: see
:func:`autoseg.evaluation.learning_curve.learning_curve`."""

from __future__ import annotations

from autoseg.cli.options import add_loader_workers


def register(sub) -> None:
    from autoseg.evaluation.learning_curve import DEFAULT_FRACTIONS, DEFAULT_SEEDS

    p = sub.add_parser(
        "learning-curve",
        help="Dice against the number of labelled subjects: how many more to label",
        description="Train one planned configuration on nested subsets of the training "
        "subjects (several seeds), score each model on the same held-out subjects (one fold's "
        "validation set), fit a power law of the error 1 - Dice and say how many more "
        "labelled subjects a target Dice needs, or that the curve is flat. Needs a plan "
        "(autoseg plan-and-train, or autoseg plan); rerun the same command to resume. "
        "Results under results/<dataset>/learning_curve/<config>/ "
        "(documentation/learning_curve.md). Python API: "
        "autoseg.evaluation.learning_curve.learning_curve.",
    )
    p.add_argument("dataset", help="dataset id, folder name or path")
    p.add_argument(
        "--config",
        help="configuration to train (default: find-best's choice, else the plan's first; "
        "not a crop configuration)",
    )
    p.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=list(DEFAULT_FRACTIONS),
        help="shares of the training subjects (default 0.25 0.5 0.75 1.0)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        help=f"subsets and training seeds per fraction (default {DEFAULT_SEEDS})",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--time-budget",
        help="wall clock of the whole command, e.g. 20m, split evenly over the runs",
    )
    budget.add_argument("--run-budget", help="wall clock of each run, e.g. 2m30s")
    p.add_argument(
        "--target",
        type=float,
        help="Dice to ask about (default: the Dice at 100 %% plus 0.05, at most halfway to 1)",
    )
    p.add_argument(
        "--holdout-fold",
        type=int,
        default=0,
        help="the fold of splits.json whose validation cases are held out (default 0)",
    )
    p.add_argument(
        "--n-folds", type=int, default=5, help="folds when splits.json is created (default 5)"
    )
    p.add_argument("--epochs", type=int, help="override the plan's number of epochs")
    p.add_argument("--iterations", type=int, help="override iterations per epoch")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    add_loader_workers(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from autoseg.evaluation.learning_curve import (
        FIGURE_FILE,
        RESULT_FILE,
        format_table,
        learning_curve,
    )
    from autoseg.layout import ResultsLayout
    from autoseg.paths import resolve_dataset, results_dir
    from autoseg.planning.schedule import parse_duration

    result = learning_curve(
        args.dataset,
        config=args.config,
        fractions=args.fractions,
        seeds=args.seeds,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        run_budget_s=parse_duration(args.run_budget) if args.run_budget else None,
        holdout_fold=args.holdout_fold,
        n_folds=args.n_folds,
        epochs=args.epochs,
        iterations=args.iterations,
        target=args.target,
        device=args.device,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    folder = ResultsLayout(results_dir() / resolve_dataset(args.dataset).name).learning_curve_dir(
        result["config"]
    )
    print(format_table(result))
    print(f"written: {folder / RESULT_FILE}, {folder / FIGURE_FILE}")
    return 0
