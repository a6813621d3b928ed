from __future__ import annotations

import pytest
import torch

from autoseg.training.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    deep_supervision_weights,
    downsample_target,
    soft_dice_loss,
)


def _perfect_logits(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    onehot = torch.zeros(target.shape[0], n_classes, *target.shape[2:])
    onehot.scatter_(1, target.long(), 1.0)
    return onehot * 40.0 - 20.0


def test_dice_is_zero_for_perfect_and_one_for_disjoint():
    t = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    t[:, :, 2:4, 2:4] = 1
    assert soft_dice_loss(_perfect_logits(t, 2), t).item() == pytest.approx(0.0, abs=1e-5)
    wrong = torch.zeros_like(t)
    wrong[:, :, 6:8, 6:8] = 1
    assert soft_dice_loss(_perfect_logits(wrong, 2), t).item() == pytest.approx(1.0, abs=1e-4)


def test_dice_matches_hand_computation_for_half_overlap():
    t = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    t[0, 0, 0, :] = 1  # 4 voxels
    p = torch.zeros_like(t)
    p[0, 0, 0, :2] = 1
    p[0, 0, 1, :2] = 1  # 4 voxels, 2 overlapping -> Dice 0.5
    assert soft_dice_loss(_perfect_logits(p, 2), t).item() == pytest.approx(0.5, abs=1e-4)


def test_batch_dice_ignores_empty_patch():
    t = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    t[0, :, 2:4, 2:4] = 1  # second patch has no foreground
    logits = _perfect_logits(t, 2)
    assert soft_dice_loss(logits, t, batch_dice=True).item() < 1e-4


def test_dice_ce_gradient_flows():
    logits = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 6, 6, 6))
    loss = DiceCELoss()(logits, target)
    loss.backward()
    assert loss.item() > 0 and logits.grad is not None and logits.grad.abs().sum() > 0


def test_deep_supervision_weights():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)
    assert w[-1] == 0 and sum(w) == pytest.approx(1.0)
    assert w[0] == pytest.approx(2 * w[1]) and w[1] == pytest.approx(2 * w[2])


def test_deep_supervision_loss_uses_all_scales():
    t = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    t[:, :, 2:6, 2:6] = 1
    targets = [t, downsample_target(t, (4, 4)), downsample_target(t, (2, 2))]
    assert targets[1].shape == (1, 1, 4, 4) and targets[1].sum() == 4
    good = [_perfect_logits(x, 2) for x in targets]
    loss = DeepSupervisionLoss(DiceCELoss(), 3)
    assert loss(good, targets).item() < 1e-3
    bad = [good[0], -good[1], good[2]]  # the half-resolution output is wrong
    assert loss(bad, targets).item() > 0.5
    with pytest.raises(ValueError):
        loss(good[:2], targets[:2])
