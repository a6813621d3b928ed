"""``weighted_ce``: cross-entropy with each class weighted by its inverse frequency.

The weights come from each batch's own label counts, ``w_c = N / (C * n_c)`` over the ``C``
classes present (a class absent from the batch gets no weight), so a voxel of a class that
covers 1 % of the batch counts ~100 times a background voxel. Desai et al. found this biased
towards false positives on knee MRI; documentation/benchmarks.md checks that here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.training.losses import register_loss
from autoseg.training.losses.core import split_ignore


def inverse_frequency_weights(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``N / (C_present * n_c)`` for the classes present in ``target``, 0 for absent ones."""
    counts = torch.bincount(target.reshape(-1).long(), minlength=num_classes).float()
    present = counts > 0
    weights = torch.zeros(num_classes, device=target.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


class WeightedCrossEntropy(nn.Module):
    def __init__(self, num_classes: int, ignore_label: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.ignore_label is None:
            labels = target[:, 0].long()
            weights = inverse_frequency_weights(labels, self.num_classes)
            return F.cross_entropy(logits.float(), labels, weight=weights)
        # labelled voxels only: in the class counts and in the weighted mean
        labels, mask = split_ignore(target, self.ignore_label)
        labels, m = labels[:, 0], mask[:, 0]
        counts = torch.zeros(self.num_classes, device=labels.device).scatter_add_(
            0, labels.reshape(-1), m.reshape(-1)
        )
        present = counts > 0
        weights = torch.zeros(self.num_classes, device=labels.device)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        per_voxel = F.cross_entropy(logits.float(), labels, weight=weights, reduction="none")
        return (per_voxel * m).sum() / (weights[labels] * m).sum().clamp_min(1e-12)


@register_loss("weighted_ce")
def weighted_ce(block: Mapping[str, Any], num_classes: int) -> nn.Module:
    return WeightedCrossEntropy(num_classes, block.get("ignore_label"))
