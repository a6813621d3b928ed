"""Options several commands share, declared once."""

from __future__ import annotations

import argparse


def add_trainer(parser: argparse.ArgumentParser, what: str) -> None:
    """``--trainer NAME``: a registered trainer (autoseg.training.trainer.TRAINERS)."""
    parser.add_argument(
        "--trainer",
        default=None,
        help=f"registered trainer to train {what} with, written into plans.json (default: the "
        "plan's, 'default' unless edited; documentation/extending.md)",
    )


def add_loader_workers(parser: argparse.ArgumentParser) -> None:
    """``--workers``: data-augmentation processes beside the training step (None: the
    default for the device, :func:`autoseg.data.loader.default_loader_workers`)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-augmentation processes (default: 2 on a GPU; on a CPU the cores left beside "
        "the training step, at most 2)",
    )
