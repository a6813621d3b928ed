"""``autoseg train DATASET CONFIG FOLD|all``: see :func:`autoseg.training.run.train`."""

from __future__ import annotations

from autoseg.cli.options import add_loader_workers, add_trainer


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train folds of one planned configuration (then validate them out of fold)",
        description="Train one configuration of the plan on one fold, several (0,2) or all. "
        "A finished fold is skipped; an interrupted one continues with --resume. "
        "Under torchrun, --ddp trains one fold on several GPUs (or CPU processes). "
        "Python API: autoseg.training.run.train.",
    )
    p.add_argument("dataset", help="dataset id, folder name or path")
    p.add_argument("config", help="configuration name from plans.json, e.g. 3d_fullres")
    p.add_argument(
        "folds",
        nargs="?",
        default=None,
        help="fold number, list (0,2) or all (default: the plan's — all, or fold 0 when a short "
        "time budget planned one training split)",
    )
    p.add_argument("--n-folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted fold")
    p.add_argument("--overwrite", action="store_true", help="retrain finished folds")
    p.add_argument("--epochs", type=int, help="override the plan's number of epochs")
    p.add_argument("--iterations", type=int, help="override iterations per epoch")
    add_loader_workers(p)
    add_trainer(p, "this configuration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--deterministic", action="store_true", help="reproducible results (slower on GPU)"
    )
    p.add_argument("--ddp", action="store_true", help="join a torchrun process group")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _workers(args) -> int:
    if args.workers is not None:
        return int(args.workers)
    from autoseg.data.loader import default_loader_workers
    from autoseg.networks.device import pick_device

    return default_loader_workers(pick_device(args.device).type)


def run(args) -> int:
    from autoseg.evaluation.validation import validate_fold
    from autoseg.paths import preprocessed_dir, resolve_dataset, results_dir
    from autoseg.planning.plan import load_plan
    from autoseg.training.run import options_from_plan, select_trainer, train

    distributed = False
    if args.ddp:
        from autoseg.training.distributed import init_distributed

        init_distributed(args.device)
        distributed = True
    try:
        name = resolve_dataset(args.dataset).name
        if args.trainer:
            select_trainer(
                preprocessed_dir() / name / "plans.json",
                args.trainer,
                [args.config],
                results_dir() / name,
                overwrite=args.overwrite,
            )
        plan = load_plan(preprocessed_dir() / name)
        options = options_from_plan(
            plan,
            args.config,
            epochs=args.epochs,
            iterations_per_epoch=args.iterations,
            device=args.device,
            num_workers=_workers(args),
            seed=args.seed,
            deterministic=args.deterministic or None,
        )
        folds = train(
            args.dataset,
            args.config,
            args.folds,
            options=options,
            resume=args.resume,
            overwrite=args.overwrite,
            n_folds=args.n_folds,
            progress=not args.no_progress,
            validate=validate_fold,
        )
    finally:
        if distributed:
            from autoseg.training.distributed import shutdown_distributed

            shutdown_distributed()
    for f in folds:
        print(f"trained: {f}")
    return 0
