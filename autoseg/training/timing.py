"""The time-budget planner's measurement: the registered trainer's own step on a synthetic batch.

The planner (a lower stage) fits patch, batch and schedule to seconds per iteration, and
must not import training; the pipeline and the CLI hand it :func:`trainer_step_measure`, so what
it times is exactly what training runs — the trainer's network, loss (deep supervision
included), optimizer, precision, gradient clipping and layout — and a registered variant
(``--trainer``) is timed as itself.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoseg.planning.budget import StepMeasure, time_step
from autoseg.planning.plan import DEFAULT_TRAINER
from autoseg.training.trainer import TRAINERS, TrainOptions, TrainSetup


def trainer_step_seconds(
    arch: dict[str, Any],
    patch: Sequence[int],
    batch: int,
    *,
    device: str = "cpu",
    max_seconds: float | None = None,
    channels_last: bool = False,
    trainer: str = DEFAULT_TRAINER,
    warmup: int | None = None,
    repeats: int | None = None,
) -> float:
    """Median seconds of one ``train_step`` of the registered ``trainer`` for this
    architecture, patch and batch on ``device`` (random images, random labels).

    ``torch.compile`` stays off (the trainer compiles on a GPU; a compiled step is faster, so
    the plan errs on the safe side) and nothing is written: the trainer's folder is never
    created. Timing loop and caps: :func:`autoseg.planning.budget.time_step`."""
    dev = torch.device(device)
    patch = tuple(int(p) for p in patch)
    setup = TrainSetup(
        "timing",
        dict(arch),
        patch,
        int(batch),
        Path(tempfile.gettempdir()) / "autoseg-timing-unused",
        num_classes=int(arch["num_classes"]),
        trainer=trainer,
    )
    options = TrainOptions(
        device=str(dev), progress=False, compile="off", channels_last=channels_last
    )
    cls = TRAINERS.get(trainer)
    tr = cls(setup, options, [], [], setup.data_dir / "fold", loader_factory=_no_loader)
    tr.model.train()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((batch, int(arch["in_channels"]), *patch), dtype=np.float32)
    target = rng.integers(0, int(arch["num_classes"]), (batch, 1, *patch))
    sample = {"data": data, "target": target}
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    kw = {k: v for k, v in (("warmup", warmup), ("repeats", repeats)) if v is not None}
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # the trainer's setting on a GPU
    try:
        return time_step(
            lambda: tr.train_step(sample), dev.type, max_seconds=max_seconds, synchronize=sync, **kw
        )
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _no_loader(*args: Any) -> Any:
    raise AssertionError("the step timer feeds its own batch")


def trainer_step_measure(trainer: str = DEFAULT_TRAINER) -> StepMeasure:
    """What the planner times (``plan_dataset(step_measure=...)``): the step of ``trainer``."""
    TRAINERS.get(trainer)  # an unknown name fails here, before any planning

    def measure(arch: dict[str, Any], patch: Sequence[int], batch: int, **kw: Any) -> float:
        return trainer_step_seconds(arch, patch, batch, trainer=trainer, **kw)

    return measure
