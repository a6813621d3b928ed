"""``ce``: categorical cross-entropy alone (binary cross-entropy for one label).

Desai et al.'s loss study baseline: every voxel counts alike, so with a nerve of 0.1-3 % of
the voxels the background dominates the gradient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoseg.training.losses import register_loss
from autoseg.training.losses.core import cross_entropy


class CrossEntropy(nn.Module):
    def __init__(self, ignore_label: int | None = None):
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.ignore_label)


@register_loss("ce")
def ce(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    return CrossEntropy(block.get("ignore_label"))
