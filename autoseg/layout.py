"""One dataset's results folder, named in one place (:class:`ResultsLayout`)::

    <root>/results/<NNN>_<Name>/
        splits.json                       the cross-validation folds (subject-grouped)
        inference.json                    find-best's choice: configurations, folds, rules
        <config>/fold_<k>/
            checkpoint_latest.pt          every epoch (resume), checkpoint_best.pt, and
            checkpoint_final.pt           at the end of training: the model predict uses
            training_log.json             per-epoch log (curves in training_curves.png)
            validation/<case>.<ext|npz>   out-of-fold labels and probabilities
            validation/metrics.json       their scores (written last: the fold is done)
        learning_curve/<config>/          autoseg learning-curve: learning_curve.json, .png, .log
            n<N>_s<seed>/                 one run: N training subjects, seed; heldout.json last

Training writes it, validation, find-best, predict, export, the report and the benchmarks read
it; before, each spelled the names itself (``"checkpoint_final.pt"`` four ways).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
FINAL = "checkpoint_final.pt"
CHECKPOINTS = {"latest": LATEST, "best": BEST, "final": FINAL}
TRAINING_LOG = "training_log.json"
VALIDATION = "validation"
METRICS = "metrics.json"
SPLITS = "splits.json"
INFERENCE = "inference.json"
LEARNING_CURVE = "learning_curve"
_FOLD = re.compile(r"^fold_(\d+)$")


@dataclass(frozen=True)
class ResultsLayout:
    """The paths under one dataset's results folder ``root`` (nothing is created)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def splits(self) -> Path:
        return self.root / SPLITS

    @property
    def inference(self) -> Path:
        return self.root / INFERENCE

    def config_dir(self, config: str) -> Path:
        return self.root / config

    def fold_dir(self, config: str, fold: int) -> Path:
        return self.root / config / f"fold_{int(fold)}"

    def checkpoint(self, config: str, fold: int, which: str = "final") -> Path:
        """``which``: ``final`` (the model), ``best`` or ``latest`` (resume)."""
        return self.fold_dir(config, fold) / CHECKPOINTS[which]

    def training_log(self, config: str, fold: int) -> Path:
        return self.fold_dir(config, fold) / TRAINING_LOG

    def validation_dir(self, config: str, fold: int) -> Path:
        return self.fold_dir(config, fold) / VALIDATION

    def validation_metrics(self, config: str, fold: int) -> Path:
        return self.validation_dir(config, fold) / METRICS

    def learning_curve_dir(self, config: str) -> Path:
        return self.root / LEARNING_CURVE / config

    def learning_curve_run(self, config: str, n_subjects: int, seed: int) -> Path:
        return self.learning_curve_dir(config) / f"n{int(n_subjects)}_s{int(seed)}"

    def fold_is_done(self, config: str, fold: int) -> bool:
        """Trained and validated: the final checkpoint and the validation scores exist."""
        return (
            self.checkpoint(config, fold).is_file()
            and self.validation_metrics(config, fold).is_file()
        )

    def folds(self, config: str) -> list[int]:
        """Fold numbers with a folder under ``config`` (trained or not), sorted."""
        folder = self.config_dir(config)
        if not folder.is_dir():
            return []
        found = (_FOLD.match(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def trained_folds(self, config: str) -> list[int]:
        """Fold numbers of ``config`` with a final checkpoint, sorted."""
        return [f for f in self.folds(config) if self.checkpoint(config, f).is_file()]
