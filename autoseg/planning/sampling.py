"""Training-sample rules: foreground oversampling, loss, augmentation profile."""

from __future__ import annotations

import math
from collections.abc import Sequence

from autoseg.planning.plan import Loss
from autoseg.planning.spacing import ANISOTROPY_THRESHOLD

# nnU-Net forces 1/3 of the patches to contain foreground; the rest are placed at random.
OVERSAMPLE_DEFAULT = 0.33
# Below 1 % foreground the random patches rarely show the structure: +0.17 per decade below
# 1 % (0.1 % -> 0.50, the sciatic nerve's 0.15 % -> 0.47), capped at 0.67 (reached at 0.01 %)
# so that a third of the patches still show background far from the structure, where the
# false positives (vessels) arise.
OVERSAMPLE_FRACTION_THRESHOLD = 0.01
OVERSAMPLE_PER_DECADE = 0.17
OVERSAMPLE_MAX = 0.67


def oversample_rate(foreground_fraction: float) -> tuple[float, str]:
    """Share of patches forced to contain foreground, from the median foreground fraction."""
    f = float(foreground_fraction)
    if f >= OVERSAMPLE_FRACTION_THRESHOLD:
        return OVERSAMPLE_DEFAULT, (
            f"foreground {100 * f:.3g} % >= {100 * OVERSAMPLE_FRACTION_THRESHOLD:g} % -> "
            f"{OVERSAMPLE_DEFAULT}"
        )
    decades = math.log10(OVERSAMPLE_FRACTION_THRESHOLD / max(f, 1e-9))
    rate = round(min(OVERSAMPLE_MAX, OVERSAMPLE_DEFAULT + OVERSAMPLE_PER_DECADE * decades), 2)
    return rate, (
        f"foreground {100 * f:.3g} % is {decades:.2f} decades below "
        f"{100 * OVERSAMPLE_FRACTION_THRESHOLD:g} % -> {OVERSAMPLE_DEFAULT} + "
        f"{OVERSAMPLE_PER_DECADE} x {decades:.2f} = {rate} (max {OVERSAMPLE_MAX})"
    )


def patch_holds_case(
    patch: Sequence[int], median_shape: Sequence[int], strides: Sequence[int]
) -> bool:
    """Whether a patch is the whole (median) case: on every axis at least the median extent
    rounded down to the network's total stride, the largest patch the pooling allows there
    (usgra-seg on its 4x grid: 112 x 128 against a median frame of 120 x 134, strides 16 x 32).
    """
    return all(
        int(p) >= (int(m) // int(s)) * int(s) for p, m, s in zip(patch, median_shape, strides)
    )


def loss_rule(config: str, whole_case: bool = False) -> tuple[Loss, str]:
    """Dice + cross-entropy for every configuration (nnU-Net's default, the most robust across
    the Medical Segmentation Decathlon; Dice copes with the 0.1 % nerve, CE keeps gradients
    well behaved). No other loss is chosen automatically; users may edit the block.

    Batch Dice (intersections summed over the batch) unless every sample holds the structure:
    random patches often miss a tiny nerve, and a per-sample Dice of an empty patch is 0/0
    noise. Per-sample Dice, which weights each case equally as the evaluation does, where
    every sample holds foreground: ``crop`` windows (centred on the structure) and
    ``whole_case`` — a patch that is the whole case (:func:`patch_holds_case`) of a dataset
    whose every case has foreground. There batch Dice lets a large structure outweigh a small
    one in the same batch: on usgra-seg (whole 2D frames, four seeds paired) per-sample Dice
    scored +0.033 hold-out nerve Dice (+0.044, +0.057, -0.003, +0.034), vessel +0.004, and raised
    the mean of both on every seed (+0.010 to +0.035); at the default 25-minute command, five
    seeds each trained from one shared plan, +0.014 ± 0.012 on the hold-out mean of both labels
    (documentation/planning.md, "Loss").
    """
    if config == "crop":
        return Loss(
            batch_dice=False
        ), "dice_ce; every crop sample holds foreground -> per-sample Dice"
    if whole_case:
        return Loss(batch_dice=False), (
            "dice_ce; the patch is the whole case and every case has foreground -> per-sample "
            "Dice (each case weighs equally)"
        )
    return Loss(batch_dice=True), "dice_ce; patches may miss the structure -> batch Dice"


def augmentation_profile(spacing: Sequence[float], context_slices: int = 1) -> tuple[str, str]:
    """Augmentation profile name (the data loader defines each profile).

    ``2d`` / ``2.5d`` (the same transform applied to all k context slices) for the slice
    configurations (two spacing values; read from the fields, not the name, so a registered
    configuration gets the right one); for 3D ``3d_anisotropic`` when the configuration's
    spacing is anisotropic (ratio > 3: rotate and scale in-plane only, as nnU-Net's "dummy
    2D" augmentation - rotating 3 mm slices out of plane invents data), else ``3d``.
    """
    if len(spacing) == 2:  # a slice configuration: 2D, or 2.5D stacks of k slices
        profile = "2.5d" if context_slices > 1 else "2d"
        return profile, f"{profile} configuration"
    ratio = max(spacing) / min(spacing)
    if ratio > ANISOTROPY_THRESHOLD:
        return "3d_anisotropic", f"spacing anisotropy {ratio:.3g} > {ANISOTROPY_THRESHOLD:g}"
    return "3d", f"spacing anisotropy {ratio:.3g} <= {ANISOTROPY_THRESHOLD:g}"
