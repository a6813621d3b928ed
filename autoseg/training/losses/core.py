"""Dice + cross-entropy, with deep supervision.

Why both: cross-entropy gives well-behaved gradients from the first iteration, while soft Dice
is insensitive to the class imbalance of tiny structures (nerves are ~0.1-0.2 % of voxels,
where cross-entropy alone settles on "all background"). Their sum is nnU-Net's default and the
most robust choice across the Medical Segmentation Decathlon.

Sparse annotation: every loss here takes ``ignore_label`` (the plan's, from dataset.json's
``ignore``). Voxels of that value contribute nothing: cross-entropy is the mean over the
labelled voxels only, soft Dice sums its intersections and volumes over them only (prediction
and reference both masked), so the gradient at an unlabelled voxel is exactly zero. A batch
without any labelled voxel gives 0, not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def split_ignore(
    target: torch.Tensor, ignore_label: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(labels, mask)`` of an integer target (B, 1, ...): ``labels`` with unlabelled voxels set
    to 0 (a valid class index), ``mask`` 1.0 where labelled (None without ``ignore_label``)."""
    target = target.long()
    if ignore_label is None:
        return target, None
    keep = target != int(ignore_label)
    return torch.where(keep, target, torch.zeros_like(target)), keep.float()


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-voxel ``values`` (B, ...) over the voxels where ``mask`` (B, 1, ...) is 1;
    the plain mean without a mask; 0 when nothing is labelled."""
    if mask is None:
        return values.mean()
    m = mask[:, 0]
    return (values * m).sum() / m.sum().clamp_min(1.0)


def drop_ignored(
    pred: torch.Tensor, target: torch.Tensor, ignore_label: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and target label maps with unlabelled voxels set to background in both, so
    that Dice counts (tp, fp, fn) of foreground classes come from labelled voxels only."""
    if ignore_label is None:
        return pred, target
    keep = target != int(ignore_label)
    zero = torch.zeros_like(target)
    return torch.where(keep, pred, zero.to(pred.dtype)), torch.where(keep, target, zero)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    batch_dice: bool = True,
    include_background: bool = False,
    smooth: float = 1e-5,
    ignore_label: int | None = None,
) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes.

    ``target`` holds integer labels of shape (B, 1, *spatial). With ``batch_dice`` the
    intersections are summed over the whole batch before dividing: a patch without any nerve
    then does not produce a 0/0 Dice that dominates the mean (patches are mostly background).
    """
    probs = torch.softmax(logits.float(), dim=1)
    n_classes = probs.shape[1]
    labels, mask = split_ignore(target, ignore_label)
    onehot = torch.zeros_like(probs).scatter_(1, labels, 1.0)
    if mask is not None:
        probs, onehot = probs * mask, onehot * mask
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    axes = tuple(range(2, probs.ndim))
    if batch_dice:
        axes = (0, *axes)
    intersect = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * intersect + smooth) / (denom + smooth).clamp_min(1e-8)
    if n_classes == 1:
        return torch.zeros((), device=logits.device)
    return 1.0 - dice.mean()


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * soft Dice`` on integer label targets (B, 1, ...)."""

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        batch_dice: bool = True,
        ignore_label: int | None = None,
    ):
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = cross_entropy(logits, target, self.ignore_label)
        dice = soft_dice_loss(
            logits, target, batch_dice=self.batch_dice, ignore_label=self.ignore_label
        )
        return self.ce_weight * ce + self.dice_weight * dice


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, ignore_label: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy over the labelled voxels (all of them without ``ignore_label``)."""
    if ignore_label is None:
        return F.cross_entropy(logits.float(), target[:, 0].long())
    labels, mask = split_ignore(target, ignore_label)
    per_voxel = F.cross_entropy(logits.float(), labels[:, 0], reduction="none")
    return masked_mean(per_voxel, mask)


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... for full resolution down, the coarsest output dropped, summing
    to 1. The coarsest map (often 1/16 or 1/32 of the patch) cannot represent a 3-voxel nerve,
    so its loss would only add noise; the halving keeps the full-resolution output dominant."""
    if n_outputs < 1:
        raise ValueError("need at least one output")
    if n_outputs == 1:
        return [1.0]
    raw = [0.5**i for i in range(n_outputs)]
    raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the outputs of every decoder scale."""

    def __init__(self, loss: nn.Module, n_outputs: int):
        super().__init__()
        self.loss = loss
        self.weights = deep_supervision_weights(n_outputs)

    def forward(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        if len(outputs) != len(self.weights) or len(targets) != len(self.weights):
            raise ValueError(
                f"expected {len(self.weights)} outputs and targets, got "
                f"{len(outputs)} and {len(targets)}"
            )
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out, tgt in zip(self.weights, outputs, targets):
            if w:
                total = total + w * self.loss(out, tgt)
            else:
                # Keep the zero-weighted head in the graph: DDP requires every parameter to
                # receive a gradient, and this costs nothing like a real loss term.
                total = total + 0.0 * out.float().sum()
        return total


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of an integer label map (B, 1, *spatial) to ``shape``.

    Every output voxel copies one input voxel, so an ignore value stays the ignore value: the
    deep-supervision targets carry the same mask as the full-resolution one."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target.float(), size=tuple(shape), mode="nearest").to(target.dtype)
