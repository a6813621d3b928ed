"""``focal``: focal loss, ``-(1 - p_t)^gamma log p_t`` averaged over voxels (gamma 3).

Lin et al.'s down-weighting of easy voxels; gamma 3 is the value of Desai et al.'s loss
study."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoseg.training.losses import register_loss
from autoseg.training.losses.core import masked_mean, split_ignore

GAMMA = 3.0


class FocalLoss(nn.Module):
    def __init__(self, gamma: float = GAMMA, ignore_label: int | None = None):
        super().__init__()
        self.gamma = gamma
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels, mask = split_ignore(target, self.ignore_label)
        log_p = torch.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, labels).squeeze(1)
        pt = log_pt.exp()
        return masked_mean(-((1.0 - pt) ** self.gamma) * log_pt, mask)


@register_loss("focal")
def focal(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    return FocalLoss(GAMMA, block.get("ignore_label"))
