"""``dice_ce``: soft Dice + cross-entropy, nnU-Net's default and the planner's choice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from autoseg.training.losses import register_loss
from autoseg.training.losses.core import DiceCELoss


@register_loss("dice_ce")
def dice_ce(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    return DiceCELoss(
        ce_weight=float(block.get("ce_weight", 1.0)),
        dice_weight=float(block.get("dice_weight", 1.0)),
        batch_dice=bool(block.get("batch_dice", True)),
        ignore_label=block.get("ignore_label"),
    )
