"""``autoseg plan-and-train DATASET``: see :func:`autoseg.pipeline.plan_and_train`."""

from __future__ import annotations

from autoseg.cli.options import add_loader_workers, add_trainer


def register(sub) -> None:
    p = sub.add_parser(
        "plan-and-train",
        help="plan, preprocess, train all folds of all configurations, choose the best",
        description="Everything from a converted dataset to a chosen model: fingerprint, "
        "plan, preprocess, 5-fold cross-validation of every planned configuration, then "
        "find-best (configuration or ensemble, plus post-processing). Rerun the same "
        "command after an interruption to continue. Python API: "
        "autoseg.pipeline.plan_and_train.",
    )
    p.add_argument("dataset", help="dataset id, folder name or path")
    p.add_argument("--configs", help="comma-separated configurations (default: all planned)")
    p.add_argument(
        "--folds",
        default=None,
        help="all or e.g. 0,1 (default: the plan's — every fold, or fold 0 alone when a short "
        "--time-budget planned one model on one training split)",
    )
    p.add_argument("--n-folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument(
        "--time-budget",
        help="wall-clock time of the whole run, fingerprint to find-best, e.g. 25m or 8h: the "
        "plan is fitted to it (a short one trains one model on one split; "
        "documentation/planning.md)",
    )
    p.add_argument("--gpu-memory", type=float, help="GPU memory budget in GB")
    p.add_argument("--device", default="auto")
    add_loader_workers(p)
    add_trainer(p, "every configuration (the time budget times its step)")
    p.add_argument(
        "--no-scale-views",
        action="store_true",
        help="find-best does not try predicting at 1.1x and 1.2x finer grids too "
        "(documentation/find_best.md, 'Scale views')",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from autoseg.pipeline import plan_and_train
    from autoseg.planning.schedule import parse_duration

    result = plan_and_train(
        args.dataset,
        configs=args.configs.split(",") if args.configs else None,
        folds=args.folds,
        n_folds=args.n_folds,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        gpu_memory_gb=args.gpu_memory,
        device=args.device,
        num_workers=args.workers,
        progress=not args.no_progress,
        trainer=args.trainer,
        scale_views=not args.no_scale_views,
    )
    info = result.inference
    print(f"plan: {result.plan_path}")
    views = info.get("scale_views") or {}
    print(
        f"chosen: {info.get('chosen')} (cross-validated Dice {info.get('cv_dice')}, "
        f"with post-processing {info.get('cv_dice_postprocessed')}"
        + (f"; scale views kept: {views.get('reason')}" if views.get("adopted") else "")
        + ")"
    )
    return 0
