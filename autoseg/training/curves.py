"""Training-curve PNG: loss, pseudo Dice and learning rate per epoch, rewritten each epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from autoseg.io.atomic import atomic_path


def plot_training_curves(log: Sequence[dict[str, Any]], out_png: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in log]
    fig, (ax_loss, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax_loss.plot(epochs, [e["train_loss"] for e in log], label="train loss", color="tab:blue")
    ax_loss.plot(epochs, [e["val_loss"] for e in log], label="validation loss", color="tab:red")
    ax_loss.set_ylabel("loss")
    ax_dice = ax_loss.twinx()
    ax_dice.plot(
        epochs,
        [e["pseudo_dice"] for e in log],
        ".",
        color="tab:green",
        alpha=0.5,
        label="pseudo Dice",
    )
    ax_dice.plot(
        epochs, [e["pseudo_dice_ema"] for e in log], color="tab:green", label="pseudo Dice (EMA)"
    )
    ax_dice.set_ylabel("pseudo Dice")
    ax_dice.set_ylim(0, 1)
    lines = ax_loss.get_legend_handles_labels()
    more = ax_dice.get_legend_handles_labels()
    ax_loss.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    ax_lr.plot(epochs, [e["lr"] for e in log], color="black")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
