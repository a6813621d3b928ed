"""``autoseg plan DATASET``: fingerprint -> plans.json, with a table and the reasons."""

from __future__ import annotations

import argparse

from autoseg.cli.options import add_trainer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="choose configurations, spacing, patch/batch size and networks",
        description="Derive the training plan from the dataset fingerprint (computed first if "
        "missing) and a GPU memory budget; write $AUTOSEG_ROOT/preprocessed/<dataset>/"
        "plans.json and print one row per configuration with the reason for every choice. "
        "An existing plan is kept (it may hold hand edits) unless --overwrite is given. "
        "Python: autoseg.planning.run_plan / plan_dataset / load_plan.",
    )
    p.add_argument("dataset", help="dataset id (12), folder name (012_Nerves) or path")
    p.add_argument(
        "--gpu-memory",
        type=float,
        default=None,
        metavar="GB",
        help="GPU memory budget in GB (default: the detected GPU's memory, else 8)",
    )
    p.add_argument(
        "--time-budget",
        default=None,
        metavar="DURATION",
        help="wall-clock time for training the planned configurations, e.g. 10m, 8h, 1h30m: "
        "training iterations are timed on the device; grids coarsened, networks shrunk, "
        "configurations dropped, 5 folds or one training split and epochs chosen to fit "
        "(documentation/planning.md)",
    )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="where training will run (default: cuda if available, else cpu); "
        "--time-budget times the iterations there",
    )
    p.add_argument(
        "--configs",
        default=None,
        metavar="LIST",
        help="only these configurations, e.g. 2d,3d_fullres "
        "(from 2d, 2.5d, 3d_fullres, 3d_lowres, crop; default: all the rules choose)",
    )
    p.add_argument(
        "--network",
        default="unet",
        help="registered network: unet (plain U-Net, default), resenc_unet (residual encoder), "
        "or one of yours (documentation/extending.md)",
    )
    add_trainer(p, "every configuration (--time-budget times its step)")
    p.add_argument("--overwrite", action="store_true", help="re-plan even if plans.json exists")
    p.add_argument("--brief", action="store_true", help="print the table without the reasons")
    p.add_argument("--root", default=None, help="data root (default: $AUTOSEG_ROOT)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from autoseg.paths import results_dir
    from autoseg.planning import (
        PLANS_FILE,
        ensure_fingerprint,
        format_plan,
        load_plan,
        parse_duration,
        plan_is_stale,
        run_plan,
    )
    from autoseg.training.run import select_trainer
    from autoseg.training.timing import trainer_step_measure

    budget = None if args.time_budget is None else parse_duration(args.time_budget)
    trainer = args.trainer or "default"
    fp_path = ensure_fingerprint(args.dataset, args.root)
    out = fp_path.parent / PLANS_FILE
    kept = out.is_file() and not args.overwrite
    if not kept:
        out = run_plan(
            args.dataset,
            args.root,
            gpu_memory_gb=args.gpu_memory,
            configs=args.configs,
            time_budget_s=budget,
            network=args.network,
            device=args.device,
            overwrite=True,
            step_measure=None if budget is None else trainer_step_measure(trainer),
        )
    if args.trainer:
        select_trainer(out, args.trainer, None, results_dir(args.root) / out.parent.name)
    plan = load_plan(out)
    print(format_plan(plan, why=not args.brief))
    timing = time_budget_lines(plan)
    if timing:
        print()
        print("\n".join(timing))
    print()
    if kept:
        print(f"plan kept (it may hold hand edits; use --overwrite to re-plan): {out}")
        if plan_is_stale(plan, fp_path):
            print(
                "warning: the fingerprint changed since this plan was made; re-plan with "
                "--overwrite"
            )
    else:
        print(f"plan written: {out}")
    return 0


def _grid(spacing) -> str:  # noqa: ANN001
    return "x".join(f"{v:g}" for v in spacing) + " mm"


def time_budget_lines(plan) -> list[str]:  # noqa: ANN001 (a Plan; lazy import)
    """Per configuration of a time-budget plan: measured iteration time and schedule."""
    s = plan.schedule
    if s.source != "time_budget" or s.fold_budget_s is None:
        return []
    folds = "5 folds" if s.folds is None else "one training split (fold 0, its hold-out scored)"
    lines = [
        f"time budget {s.time_budget_s:g} s: {len(plan.configurations)} configuration(s) x "
        f"{folds}, {s.fold_budget_s:g} s per fold ({plan.device.type})"
    ]
    if "time_budget_warning" in plan.why:
        lines.append(plan.why["time_budget_warning"])
    for name, c in plan.configurations.items():
        if c.schedule is None or c.measured_step_s is None:
            continue
        grid = "" if c.spacing == plan.target_spacing else f" on a {_grid(c.spacing)} grid"
        lines.append(
            f"  {name}{grid}: {c.measured_step_s:.3g} s/iteration measured -> "
            f"{c.schedule.epochs} epochs x {c.schedule.iterations_per_epoch} iterations "
            f"(epoch loop <= {c.schedule.train_budget_s:g} s per fold)"
        )
    return lines
