"""Losses a plan can name (``configurations.<name>.loss.name``), one small file each.

``@register_loss("name")`` on a factory ``(loss block of the plan, number of classes) ->
nn.Module`` taking logits ``(B, C, ...)`` and integer targets ``(B, 1, ...)``; the trainer
wraps it in :class:`DeepSupervisionLoss`. Built in: ``dice_ce`` (nnU-Net's default, the
planner's choice) and the four of Desai et al.'s loss study — ``ce``, ``soft_dice``,
``weighted_ce`` and ``focal`` (gamma 3). A new file in this package registers itself
(documentation/extending.md).

The loss block carries ``ignore_label`` (the plan's; None when every voxel is labelled): a
loss must give voxels of that target value no weight (``core.split_ignore`` and
``core.masked_mean`` help), as the built-in ones do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from autoseg.registry import Registry
from autoseg.training.losses.core import (
    DeepSupervisionLoss,
    DiceCELoss,
    deep_supervision_weights,
    downsample_target,
    soft_dice_loss,
)

LossFactory = Callable[[Mapping[str, Any], int], nn.Module]

LOSSES: Registry[LossFactory] = Registry(
    "loss", packages=("autoseg.training.losses",), where="plans.json configurations.*.loss.name"
)
register_loss = LOSSES.register


def build_loss(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The loss the plan's ``loss`` block names (``dice_ce`` when it names none)."""
    return LOSSES.get(str(block.get("name", "dice_ce")))(block, num_classes)


__all__ = [
    "LOSSES",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "build_loss",
    "deep_supervision_weights",
    "downsample_target",
    "register_loss",
    "soft_dice_loss",
]
