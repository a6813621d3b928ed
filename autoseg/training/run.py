"""``autoseg train``: one configuration, one or all folds, from the plan to validated folds.

A fold is finished when ``checkpoint_final.pt`` and ``validation/metrics.json`` exist; a rerun
skips it. An interrupted fold continues from ``checkpoint_latest.pt`` with ``resume=True``.
The end-of-fold validation predicts every validation case with the same code path as
``autoseg predict`` (sliding window, mirroring, inversion to the original geometry) and keeps
the probabilities so that find-best can compare and ensemble configurations out of fold.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autoseg.choices import parse_folds
from autoseg.data.loader import LoaderConfig
from autoseg.errors import AutosegError, failure_context
from autoseg.io import list_cases, load_dataset_json
from autoseg.layout import ResultsLayout
from autoseg.training.splits import load_or_create_splits
from autoseg.training.trainer import FINAL, LATEST, TRAINERS, Trainer, TrainOptions, TrainSetup

FoldValidator = Callable[..., Any]
"""``(raw, plan, config, fold, results, *, root, progress, device) -> scores``, after a fold."""


def setup_from_plan(plan: Any, config: str, data_dir: Path) -> TrainSetup:
    """The trainer's view of one planned configuration."""
    if config not in plan.configurations:
        raise AutosegError(
            f"configuration {config!r} is not in the plan (it has "
            f"{', '.join(plan.configurations)})",
            fix="pick one of those, or re-plan with --configs",
        )
    cfg = plan.configurations[config]
    return TrainSetup(
        config_name=config,
        arch=dict(cfg.architecture),
        patch_size=tuple(cfg.patch_size),
        batch_size=cfg.batch_size,
        data_dir=data_dir,
        num_classes=plan.num_classes,
        loader=LoaderConfig.from_configuration(plan, config),
        loss={
            "name": cfg.loss.name,
            "batch_dice": cfg.loss.batch_dice,
            "dice_weight": cfg.loss.dice_weight,
            "ce_weight": cfg.loss.ce_weight,
            "ignore_label": getattr(plan, "ignore_label", None),
        },
        trainer=cfg.trainer,
    )


def options_from_plan(plan: Any, config: str | None = None, **overrides: Any) -> TrainOptions:
    """Training options: the schedule from the plan (a configuration's own ``schedule`` block
    when the time-budget rule gave it one, else the plan-wide one), the rest as overridden.
    Overrides that are None are ignored; unknown names are an error."""
    from autoseg.planning.plan import ConfigurationSchedule

    schedule = plan.schedule
    if config is not None and getattr(plan.configurations[config], "schedule", None):
        schedule = plan.configurations[config].schedule
    opts = TrainOptions(epochs=schedule.epochs, iterations_per_epoch=schedule.iterations_per_epoch)
    if isinstance(schedule, ConfigurationSchedule):  # fitted to a time budget
        opts.optimizer = schedule.optimizer
        opts.initial_lr = schedule.initial_lr
        opts.weight_decay = schedule.weight_decay
        opts.cpu_threads = schedule.cpu_threads
        opts.channels_last = schedule.channels_last
    for k, v in overrides.items():
        if not hasattr(opts, k):
            raise TypeError(f"unknown training option {k!r}")
        if v is not None:
            setattr(opts, k, v)
    return opts


def select_trainer(
    plan_path: Path,
    trainer: str,
    configs: Sequence[str] | None = None,
    results: Path | None = None,
    *,
    overwrite: bool = False,
) -> None:
    """Name the registered ``trainer`` in the plan's ``configs`` (all by default), rewriting
    ``plans.json`` — what ``--trainer`` does. Refuses when such a configuration already has
    fold folders under ``results`` made by another trainer, unless ``overwrite`` (the caller
    retrains them): a configuration's folds are one trainer's, since find-best averages them."""
    import dataclasses

    from autoseg.planning.plan import load_plan, save_plan

    TRAINERS.get(trainer)  # an unknown name: one line listing the registered ones
    plan = load_plan(plan_path)
    names = list(configs) if configs else list(plan.configurations)
    changed = [c for c in names if c in plan.configurations]
    changed = [c for c in changed if plan.configurations[c].trainer != trainer]
    if not changed:
        return
    trained = [c for c in changed if results is not None and any((results / c).glob("fold_*"))]
    if trained and not overwrite:
        c = trained[0]
        raise AutosegError(
            f"{c} has folds trained with trainer {plan.configurations[c].trainer!r}; "
            f"--trainer {trainer} would mix two trainers' folds",
            path=results / c,
            fix="add --overwrite to retrain them, or leave --trainer out",
        )
    configurations = dict(plan.configurations)
    for c in changed:
        configurations[c] = dataclasses.replace(configurations[c], trainer=trainer)
    save_plan(dataclasses.replace(plan, configurations=configurations), plan_path)


def fold_dir(results: Path, config: str, fold: int) -> Path:
    return ResultsLayout(results).fold_dir(config, fold)


def fold_is_done(results: Path, config: str, fold: int) -> bool:
    return ResultsLayout(results).fold_is_done(config, fold)


def train(
    dataset: str | int | os.PathLike,
    config: str,
    folds: str | int | Sequence[int] | None = None,
    root: str | os.PathLike | None = None,
    *,
    options: TrainOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    n_folds: int = 5,
    progress: bool = True,
    validate: FoldValidator | None = None,
) -> list[Path]:
    """Train folds of one configuration, each then checked by ``validate`` (the command line
    and the pipeline pass :func:`autoseg.evaluation.validation.validate_fold`: predict the
    fold's validation cases, score them); returns the fold folders. ``folds`` None: the
    plan's (``schedule.folds``; every fold when it names none). Training does not import the
    predictor: validation belongs to the stages above it."""
    from autoseg.paths import preprocessed_dir, resolve_dataset, results_dir
    from autoseg.planning.plan import load_plan
    from autoseg.preprocessing.preprocess import data_identifier, preprocess_dataset

    raw = resolve_dataset(dataset, root)
    name = raw.name
    plan = load_plan(preprocessed_dir(root) / name)
    data_dir = preprocessed_dir(root) / name / data_identifier(plan, config)
    if not (data_dir / "manifest.json").is_file():
        preprocess_dataset(raw, root, configs=[config], progress=progress)
    setup = setup_from_plan(plan, config, data_dir)
    options = options or options_from_plan(plan, config)
    options.progress = progress
    ds = load_dataset_json(raw)
    case_ids = [c.case_id for c in list_cases(raw, ds)]
    results = results_dir(root) / name
    splits = load_or_create_splits(
        results / "splits.json",
        case_ids,
        [ds.subject_of(c) for c in case_ids],
        [ds.cohort_of(c) for c in case_ids],
        n_folds=n_folds,
    )
    if folds is None:
        folds = "all" if plan.schedule.folds is None else list(plan.schedule.folds)
    out = []
    for fold in parse_folds(folds, len(splits)):
        fdir = fold_dir(results, config, fold)
        out.append(fdir)
        if fold_is_done(results, config, fold) and not overwrite:
            continue
        partial = (fdir / LATEST).is_file() and not (fdir / FINAL).is_file()
        if partial and not (resume or overwrite):
            raise AutosegError(
                f"fold {fold} of {config} was interrupted",
                path=fdir,
                fix="add --resume to continue it, or --overwrite to start it again",
            )
        if overwrite and fdir.exists():
            import shutil

            shutil.rmtree(fdir)
        if not (fdir / FINAL).is_file():
            trainer = TRAINERS.get(setup.trainer)(
                setup, options, splits[fold]["train"], splits[fold]["val"], fdir, fold=fold
            )
            lines = EpochLines.attach(trainer) if progress else None
            with failure_context(f"train {config} fold {fold}"):
                trainer.fit(resume=resume)
            if lines is not None:
                lines.flush()
        if validate is not None:
            dev = options.device
            validate(raw, plan, config, fold, results, root=root, progress=progress, device=dev)
    return out


class EpochLines:
    """One line per finished epoch where stderr is not a terminal (a log file, CI), in place
    of the epoch's transient progress bar::

        3d_fullres fold 0 epoch 3/40: train loss 0.4121, pseudo Dice 0.6334, 12.4s

    The trainer calls it at every iteration (``on_iteration``); at an epoch's first iteration
    it prints the epochs finished since the last call, and :meth:`flush` prints the last one
    after ``fit``. Epochs from before a resume were reported by the run that trained them.
    """

    def __init__(self, trainer: Trainer, stream: Any = None):
        self.trainer = trainer
        self.stream = stream
        self.seen: int | None = None

    @classmethod
    def attach(cls, trainer: Trainer, stream: Any = None) -> EpochLines | None:
        """Install on the trainer's main process when ``stream`` (default stderr) is not a
        terminal; None otherwise (a terminal shows the live bar)."""
        from autoseg.progress import is_terminal

        if trainer.rank != 0 or is_terminal(stream if stream is not None else sys.stderr):
            return None
        lines = cls(trainer, stream)
        trainer.on_iteration = lines
        return lines

    def __call__(self, epoch: int, iteration: int) -> None:
        if iteration == 0:
            self.flush()

    def flush(self) -> None:
        from autoseg.progress import format_seconds

        log = self.trainer.log
        if self.seen is None:
            self.seen = len(log)
        stream = self.stream if self.stream is not None else sys.stderr
        for entry in log[self.seen :]:
            stream.write(
                f"{self.trainer.setup.config_name} fold {self.trainer.fold} epoch "
                f"{entry['epoch']}/{self.trainer.options.epochs}: "
                f"train loss {entry['train_loss']:.4f}, "
                f"pseudo Dice {entry['pseudo_dice']:.4f}, "
                f"{format_seconds(entry['epoch_seconds'])}\n"
            )
        stream.flush()
        self.seen = len(log)
