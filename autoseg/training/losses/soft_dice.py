"""``soft_dice``: 1 - mean soft Dice over the foreground classes, without cross-entropy.

Insensitive to class imbalance, but its gradient is weak while the prediction is empty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoseg.training.losses import register_loss
from autoseg.training.losses.core import soft_dice_loss


class SoftDice(nn.Module):
    def __init__(self, batch_dice: bool = True, ignore_label: int | None = None):
        super().__init__()
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(
            logits, target, batch_dice=self.batch_dice, ignore_label=self.ignore_label
        )


@register_loss("soft_dice")
def soft_dice(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    return SoftDice(
        batch_dice=bool(block.get("batch_dice", True)), ignore_label=block.get("ignore_label")
    )
