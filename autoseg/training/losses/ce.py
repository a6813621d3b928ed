"""``ce``: categorical cross-entropy alone (binary cross-entropy for one label).

Desai et al.'s loss study baseline: every voxel counts alike, so with a nerve of 0.1-3 % of
the voxels the background dominates the gradient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.training.losses import register_loss


class CrossEntropy(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target[:, 0].long())


@register_loss("ce")
def ce(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    return CrossEntropy()
